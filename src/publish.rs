//! `wspush publish CHANNEL DATA`: one publish through the HTTP API.

use anyhow::{bail, Context};

/// Publishes `data` (text, or JSON with `json`) to `channel`; prints the API's answer.
pub async fn run(
    server: &str,
    api_key: Option<&str>,
    channel: &str,
    data: &str,
    json: bool,
) -> anyhow::Result<()> {
    let data: serde_json::Value = if json {
        serde_json::from_str(data).context("DATA is not valid JSON")?
    } else {
        serde_json::Value::String(data.to_string())
    };
    let url = format!("{}/api/publish", server.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "channel": channel, "data": data }));
    if let Some(key) = api_key {
        req = req.header("authorization", format!("apikey {key}"));
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    println!("{body}");
    Ok(())
}
