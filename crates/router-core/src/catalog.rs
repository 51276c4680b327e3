//! The model catalog as clients see it: `GET /v1/models` in the seed's shape
//! (OpenRouter-like fields) plus OpenAI's `created` and `owned_by`, so strict
//! OpenAI clients parse it too.

use serde::Serialize;

use crate::config::ModelEntry;

#[derive(Debug, Serialize)]
pub struct ModelObject<'a> {
    id: &'a str,
    name: &'a str,
    object: &'static str,
    description: &'a str,
    supported_parameters: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    architecture: Architecture,
    pricing: Pricing,
    created: i64,
    owned_by: &'static str,
}

#[derive(Debug, Serialize)]
struct Architecture {
    modality: String,
    input_modalities: Vec<&'static str>,
    output_modalities: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct Pricing {
    prompt: String,
    completion: String,
}

#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub data: Vec<ModelObject<'a>>,
    pub object: &'static str,
}

impl<'a> ModelObject<'a> {
    pub fn new(entry: &'a ModelEntry, created: i64) -> Self {
        let caps = &entry.capabilities;
        let (mut input, output) = if caps.completion {
            (vec!["text"], vec!["text"])
        } else if caps.image_gen {
            (vec!["text"], vec!["image"])
        } else {
            (vec![], vec![])
        };
        if caps.input_image {
            input.push("image");
        }
        Self {
            id: &entry.name,
            name: &entry.display_name,
            object: "model",
            description: &entry.description,
            supported_parameters: entry.supported_parameters.as_deref(),
            context_length: entry.context_length.map(u64::from),
            max_completion_tokens: entry.max_tokens.map(u64::from),
            architecture: Architecture {
                modality: format!("{}->{}", input.join("+"), output.join("+")),
                input_modalities: input,
                output_modalities: output,
            },
            pricing: Pricing {
                prompt: format_price(entry.input_price_per_token),
                completion: format_price(entry.output_price_per_token),
            },
            created,
            owned_by: "router",
        }
    }
}

/// The seed's price format: ten decimals, trailing zeros and dot trimmed.
pub fn format_price(price: f64) -> String {
    let text = format!("{price:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "" | "-0" => "0".to_owned(),
        other => other.to_owned(),
    }
}

/// The listed entries: enabled and visible, first entry per name, config order.
pub fn listed(models: &[ModelEntry]) -> Vec<&ModelEntry> {
    let mut seen = std::collections::HashSet::new();
    models
        .iter()
        .filter(|entry| entry.enabled && entry.visible)
        .filter(|entry| seen.insert(entry.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_as_the_seed() {
        for (price, expected) in [
            (0.0, "0"),
            (0.000001, "0.000001"),
            (10.0, "10"),
            (0.00000000001, "0"),
            (0.0000025, "0.0000025"),
            (1.5, "1.5"),
        ] {
            assert_eq!(format_price(price), expected, "{price}");
        }
    }
}
