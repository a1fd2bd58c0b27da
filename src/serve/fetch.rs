//! Remote images named by URL in PhotoPrism's requests (`"url"`, or `http(s)://` entries of
//! `"images"`, as PhotoPrism sends with `FileScheme: https`). Fetched only from hosts the
//! operator listed (`--allow-fetch HOST[:PORT],...`): a server that fetched any address a client
//! names could be made to read internal services (server-side request forgery). No redirects (a
//! redirect could leave the allowed hosts), a timeout, and the body limit of requests. `https://`
//! needs the `fetch-tls` feature (rustls), off by default so that the default build has no C code
//! to cross-compile.

use std::time::Duration;

pub struct Fetcher {
    allowed: Vec<String>,
    client: reqwest::Client,
    max_bytes: usize,
}

impl Fetcher {
    /// `allowed`: host names or `host:port`s; `max_bytes`: the largest image taken.
    pub fn new(allowed: Vec<String>, max_bytes: usize) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client without custom TLS settings builds");
        Self {
            allowed,
            client,
            max_bytes,
        }
    }

    /// Whether `url` may be fetched, or why not.
    pub fn check(&self, url: &str) -> Result<reqwest::Url, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("URL scheme `{}` is not fetched (http, https)", u.scheme()));
        }
        if u.scheme() == "https" && !cfg!(feature = "fetch-tls") {
            return Err(
                "https URLs are fetched by builds with --features fetch-tls only; this one fetches http".into(),
            );
        }
        let host = u.host_str().unwrap_or_default().to_string();
        let with_port = format!("{host}:{}", u.port_or_known_default().unwrap_or(0));
        if !self.allowed.iter().any(|a| *a == host || *a == with_port) {
            return Err(format!(
                "remote URLs are not fetched by this server unless their host is allowed (--allow-fetch); `{host}` is not; send data URLs (vision.yml: Service.FileScheme: data)"
            ));
        }
        Ok(u)
    }

    /// The body of `url`, if its host is allowed.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let u = self.check(url)?;
        let mut res = self
            .client
            .get(u)
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("fetching {url}: status {}", res.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| format!("fetching {url}: {e}"))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("fetching {url}: more than {} bytes", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_hosts_pass() {
        let f = Fetcher::new(vec!["photos.lan".into(), "127.0.0.1:2342".into()], 1 << 20);
        assert_eq!(
            f.check("https://photos.lan/api/v1/dl/abc").is_ok(),
            cfg!(feature = "fetch-tls")
        );
        assert!(f.check("http://127.0.0.1:2342/x.jpg").is_ok());
        for (url, why) in [
            ("http://127.0.0.1:8080/x.jpg", "`127.0.0.1` is not"),
            ("http://169.254.169.254/latest/meta-data", "`169.254.169.254` is not"),
            ("http://photos.lan.evil.com/x", "is not"),
            ("file:///etc/passwd", "scheme `file`"),
            ("http//nope", "invalid URL"),
        ] {
            let e = f.check(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
