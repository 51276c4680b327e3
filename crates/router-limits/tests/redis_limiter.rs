//! The shared limiter against a real redis-server: several limiters on one
//! Redis (as several replicas would be) hold one limit between them, all or
//! nothing, with refunds, calendar counters that outlive a restart, TTLs on
//! every key, and the fallback while Redis is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engines;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::redis::RedisServer;
use router_core::config::{self, Config, LimitsBackend, RedisConfig};
use router_core::limits::{AdmitError, Demand, Limiter, Measure, Scope, Settlement, Window};
use router_core::secret::Secret;
use router_limits::RedisLimiter;

fn config(yaml: &str, redis: &RedisServer) -> (Config, RedisConfig) {
    let yaml = format!(
        "{yaml}\nlimits:\n  backend: redis\n  redis:\n    url: {}\n    command_timeout: 200ms\n",
        redis.url()
    );
    let config = config::parse(Path::new("limits.yaml"), &yaml, &|_| None).unwrap();
    let LimitsBackend::Redis(redis) = config.limits.backend.clone() else {
        panic!("the config has no redis backend");
    };
    (config, redis)
}

async fn limiter(config: &Config, redis: &RedisConfig) -> Arc<RedisLimiter> {
    let limiter = Arc::new(RedisLimiter::new(config, redis).unwrap());
    assert!(
        limiter.connect(Duration::from_secs(5)).await,
        "redis did not answer"
    );
    limiter
}

fn demand(config: &Config, key: bool, provider_key: Option<usize>, tokens: u64) -> Demand<'_> {
    Demand {
        key: key.then(|| &config.api_keys[0]),
        entry: &config.models[0],
        provider_key,
        tokens,
        cost_usd: 0.0,
    }
}

const KEY_RPM: &str = "\
models:
  - name: m
    provider: mock
    enabled: true
api_keys:
  - key: sk-client
    rpm: 50
";

/// Runs `count` admissions at once, spread over `limiters`; how many passed.
async fn admit_concurrently(
    limiters: &[Arc<RedisLimiter>],
    config: &Arc<Config>,
    count: usize,
    tokens: u64,
) -> (usize, Vec<AdmitError>) {
    let mut tasks = Vec::new();
    for index in 0..count {
        let limiter = Arc::clone(&limiters[index % limiters.len()]);
        let config = Arc::clone(config);
        tasks.push(tokio::spawn(async move {
            limiter
                .admit(&demand(&config, true, None, tokens))
                .await
                // Permits stay held: settling is not what is measured.
                .map(drop)
        }));
    }
    let mut admitted = 0;
    let mut refusals = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(error) => refusals.push(error),
        }
    }
    (admitted, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_limiters_on_one_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let (config, shared) = config(KEY_RPM, &redis);
    let config = Arc::new(config);
    let mut limiters = Vec::new();
    for _ in 0..3 {
        limiters.push(limiter(&config, &shared).await);
    }
    let (admitted, refusals) = admit_concurrently(&limiters, &config, 300, 1).await;
    assert_eq!(admitted, 50);
    assert_eq!(refusals.len(), 250);
    for refusal in refusals {
        let AdmitError::Refused(refusal) = refusal else {
            panic!("{refusal:?}");
        };
        assert_eq!(refusal.name.to_string(), "key rpm");
        assert_eq!(refusal.limit, 50);
        assert!(!refusal.never_fits);
        // One request comes back every 60 s / 50 = 1.2 s.
        assert!(
            refusal.retry_after > Duration::from_millis(900)
                && refusal.retry_after <= Duration::from_millis(1200),
            "{refusal:?}"
        );
    }
    for limiter in &limiters {
        assert_eq!(limiter.stats().fallback_admissions, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limits_count_tokens_and_refunds_give_back_the_unused() {
    let redis = RedisServer::start();
    let (config, shared) = config(
        "models:\n  - name: m\n    provider: mock\n    enabled: true\napi_keys:\n  - key: k\n    tpm: 1000\n",
        &redis,
    );
    let config = Arc::new(config);
    let limiters = [
        limiter(&config, &shared).await,
        limiter(&config, &shared).await,
    ];
    let (admitted, _) = admit_concurrently(&limiters, &config, 40, 100).await;
    assert_eq!(admitted, 10);

    // A fresh key space: the same limits under another prefix.
    let mut other = shared.clone();
    other.key_prefix = "refunds:".to_owned();
    let limiter = limiter(&config, &other).await;
    let permit = limiter
        .admit(&demand(&config, true, None, 800))
        .await
        .unwrap();
    assert!(limiter
        .admit(&demand(&config, true, None, 300))
        .await
        .is_err());
    permit.settle(Settlement {
        tokens: 200,
        cost_usd: 0.0,
    });
    // The settlement is sent from a task of its own.
    wait_until(|| async {
        limiter
            .key_headroom(&config.api_keys[0])
            .await
            .iter()
            .any(|room| room.name.measure == Measure::Tokens && room.remaining >= 790)
    })
    .await;
    let permit = limiter.admit(&demand(&config, true, None, 750)).await;
    assert!(permit.is_ok(), "{permit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_one_scope_reserves_nothing_in_the_other() {
    let redis = RedisServer::start();
    let (config, shared) = config(
        "models:\n  - name: m\n    provider: mock\n    enabled: true\n    rpm: 2\n    \
         provider_api_key: [pk-a, pk-b]\napi_keys:\n  - key: k\n    rpm: 3\n",
        &redis,
    );
    let limiter = limiter(&config, &shared).await;
    for _ in 0..2 {
        drop(
            limiter
                .admit(&demand(&config, true, Some(0), 1))
                .await
                .unwrap(),
        );
    }
    // Provider key 0 is full: the key's rpm must not be charged for it.
    for _ in 0..3 {
        let Err(AdmitError::Refused(refusal)) =
            limiter.admit(&demand(&config, true, Some(0), 1)).await
        else {
            panic!("provider key 0 should be full");
        };
        assert_eq!(refusal.name.scope, Scope::Model);
    }
    // One request of the key's three is left, on provider key 1.
    drop(
        limiter
            .admit(&demand(&config, true, Some(1), 1))
            .await
            .unwrap(),
    );
    let Err(AdmitError::Refused(refusal)) = limiter.admit(&demand(&config, true, Some(1), 1)).await
    else {
        panic!("the key should be full");
    };
    assert_eq!(refusal.name.to_string(), "key rpm");
    // Provider keys count apart, across limiters.
    let second = self::limiter(&config, &shared).await;
    let Err(AdmitError::Refused(refusal)) = second.admit(&demand(&config, false, Some(0), 1)).await
    else {
        panic!("provider key 0 is full for every replica");
    };
    assert_eq!(refusal.name.to_string(), "model rpm");
    assert!(second
        .admit(&demand(&config, false, Some(1), 1))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_quotas_and_budgets_outlive_the_limiter_and_every_key_expires() {
    let redis = RedisServer::start();
    let (config, shared) = config(
        "models:\n  - name: m\n    provider: mock\n    enabled: true\n    \
         input_price_per_token: 0.001\napi_keys:\n  - key: k\n    rpd: 5\n    rpm: 100\n    \
         max_budget_usd: 1\n    budget_period: month\n",
        &redis,
    );
    {
        let limiter = limiter(&config, &shared).await;
        for _ in 0..3 {
            drop(
                limiter
                    .admit(&demand(&config, true, None, 1))
                    .await
                    .unwrap(),
            );
        }
    }
    // A restart: a new limiter, the same Redis.
    let limiter = limiter(&config, &shared).await;
    let spend = |usd| Demand {
        cost_usd: usd,
        ..demand(&config, true, None, 1)
    };
    drop(limiter.admit(&spend(0.6)).await.unwrap());
    let Err(AdmitError::Refused(refusal)) = limiter.admit(&spend(0.6)).await else {
        panic!("the budget should refuse");
    };
    assert_eq!(refusal.name.to_string(), "key budget per month");
    assert!(refusal.retry_after > Duration::from_secs(60));
    drop(limiter.admit(&spend(0.1)).await.unwrap());
    let Err(AdmitError::Refused(refusal)) = limiter.admit(&spend(0.0)).await else {
        panic!("the day quota should refuse");
    };
    assert_eq!(refusal.name.to_string(), "key rpd");
    assert_eq!(refusal.limit, 5);
    assert_eq!(refusal.remaining, 0);

    let headroom = limiter.key_headroom(&config.api_keys[0]).await;
    let day = headroom
        .iter()
        .find(|room| room.name.window == Window::Day)
        .unwrap();
    assert_eq!((day.limit, day.remaining), (5, 0));

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("router:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        assert!(!key.contains("sk-") && !key.contains(":k:"), "{key}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_is_loaded_again() {
    let redis = RedisServer::start();
    let (config, shared) = config(KEY_RPM, &redis);
    let limiter = limiter(&config, &shared).await;
    assert!(limiter.admit(&demand(&config, true, None, 1)).await.is_ok());
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(limiter.admit(&demand(&config, true, None, 1)).await.is_ok());
    assert_eq!(limiter.stats().outages, 0);
    assert_eq!(limiter.stats().fallback_admissions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_enforces_a_share_while_redis_is_down_and_returns_to_it() {
    let mut redis = RedisServer::start();
    let (config, mut shared) = config(KEY_RPM, &redis);
    shared.replicas = std::num::NonZeroU64::new(5).unwrap();
    let config = Arc::new(config);
    let limiter = limiter(&config, &shared).await;
    redis.stop();

    // The first admission finds Redis gone within the timeout; the others
    // do not wait for it at all.
    let started = Instant::now();
    let (admitted, _) = admit_concurrently(&[Arc::clone(&limiter)], &config, 30, 1).await;
    assert!(
        started.elapsed() < shared.command_timeout + Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // 50 / 5 replicas.
    assert_eq!(admitted, 10);
    let stats = limiter.stats();
    assert!(!stats.available);
    assert_eq!(stats.outages, 1);
    assert_eq!(stats.fallback_admissions, 30);

    redis.start_again();
    wait_until(|| async { limiter.stats().available }).await;
    // A fresh Redis: the whole shared limit again.
    let (admitted, _) = admit_concurrently(&[Arc::clone(&limiter)], &config, 60, 1).await;
    assert_eq!(admitted, 50);
    assert_eq!(limiter.stats().outages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_to_check_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let (config, mut shared) = config(KEY_RPM, &redis);
    shared.on_unavailable = router_core::config::OnUnavailable::FailClosed;
    let limiter = limiter(&config, &shared).await;
    redis.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = limiter.admit(&demand(&config, true, None, 1)).await;
        assert!(started.elapsed() < shared.command_timeout + Duration::from_millis(200));
        assert!(
            matches!(answer, Err(AdmitError::Unavailable { retry_after }) if !retry_after.is_zero()),
            "{answer:?}"
        );
    }
    assert_eq!(limiter.stats().unavailable_refusals, 3);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_falls_back_without_waiting() {
    let port = engines::free_port();
    let shared = RedisConfig::new(Secret::new(format!("redis://127.0.0.1:{port}/0")));
    let mut config = config::parse(Path::new("limits.yaml"), KEY_RPM, &|_| None).unwrap();
    config.limits.backend = LimitsBackend::Redis(shared.clone());
    let limiter = RedisLimiter::new(&config, &shared).unwrap();
    assert!(!limiter.connect(Duration::from_millis(300)).await);
    let started = Instant::now();
    assert!(limiter.admit(&demand(&config, true, None, 1)).await.is_ok());
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(limiter.stats().fallback_admissions, 1);
}

/// Polls `condition` for up to five seconds.
async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition().await {
        assert!(Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
