//! The headers the proxy changes on their way through: hop-by-hop
//! headers kept on their hop, our cookie kept from the backend (and the
//! backend's `Set-Cookie` of its name dropped), the client added to the
//! forwarding headers.

use std::net::SocketAddr;

use hyper::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};

/// The value of the cookie called `name`, if the request carries one.
pub fn our_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| cookies(v.as_bytes()))
        .find(|c| cookie_name(c) == name.as_bytes())
        .and_then(|c| c.splitn(2, |&b| b == b'=').nth(1))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(String::from)
}

/// The `name=value` pairs of a `Cookie` header, as bytes: a header may
/// carry bytes that are not ASCII (RFC 6265 asks servers to cope), and
/// they must reach the backend as they came.
fn cookies(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
}

/// The name of a `name=value` pair (the whole pair when it has no `=`).
fn cookie_name(pair: &[u8]) -> &[u8] {
    pair.split(|&b| b == b'=')
        .next()
        .unwrap_or(pair)
        .trim_ascii()
}

/// Remove the hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and the
/// headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
/// `Upgrade`. Each side's connection is managed on its own (keep-alive to
/// the client whatever the backend does).
pub fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    for h in named {
        headers.remove(h.as_str());
    }
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(h);
    }
}

/// Whether the `Connection` header lists `token`.
pub fn connection_has(headers: &hyper::HeaderMap, token: &str) -> bool {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove cookie `name` from the `Cookie` header(s), keeping the others.
pub fn strip_cookie(headers: &mut hyper::HeaderMap, name: &str) {
    let ours = |v: &HeaderValue| cookies(v.as_bytes()).any(|c| cookie_name(c) == name.as_bytes());
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if !values.iter().any(ours) {
        return;
    }
    headers.remove(COOKIE);
    for v in values {
        if !ours(&v) {
            headers.append(COOKIE, v);
            continue;
        }
        let kept: Vec<&[u8]> = cookies(v.as_bytes())
            .filter(|c| cookie_name(c) != name.as_bytes())
            .collect();
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
                headers.append(COOKIE, v);
            }
        }
    }
}

/// Drop every `Set-Cookie` of cookie `name`.
pub fn drop_set_cookie(headers: &mut hyper::HeaderMap, name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.split_once('='))
                .is_none_or(|(n, _)| n.trim() != name)
        })
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for v in kept {
        headers.append(SET_COOKIE, v);
    }
}

/// Add the client (`peer`) to `X-Forwarded-For` and `Forwarded`, and say
/// how it reached the balancer (`proto`: `http` or `https`) in
/// `X-Forwarded-Proto`, which the balancer sets (a client's own is
/// replaced).
pub fn forwarded_headers(headers: &mut hyper::HeaderMap, peer: SocketAddr, proto: &'static str) {
    let ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    let node = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let fwd = match headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, for={node};proto={proto}"),
        None => format!("for={node};proto={proto}"),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert("forwarded", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
}

/// The forwarding headers of one client connection, made once for all
/// its requests.
pub struct Forwarded {
    peer: SocketAddr,
    proto: &'static str,
    /// `X-Forwarded-For` and `Forwarded` of a request that has neither.
    xff: Option<HeaderValue>,
    fwd: Option<HeaderValue>,
}

impl Forwarded {
    #[must_use]
    pub fn new(peer: SocketAddr, proto: &'static str) -> Self {
        let mut h = hyper::HeaderMap::new();
        forwarded_headers(&mut h, peer, proto);
        Self {
            peer,
            proto,
            xff: h.remove("x-forwarded-for"),
            fwd: h.remove("forwarded"),
        }
    }

    /// [`forwarded_headers`] on `headers`, with the values made once
    /// when the request carries none of its own.
    pub fn add(&self, headers: &mut hyper::HeaderMap) {
        match (&self.xff, &self.fwd) {
            (Some(xff), Some(fwd))
                if !headers.contains_key("x-forwarded-for")
                    && !headers.contains_key("forwarded") =>
            {
                headers.insert("x-forwarded-for", xff.clone());
                headers.insert("forwarded", fwd.clone());
                headers.insert("x-forwarded-proto", HeaderValue::from_static(self.proto));
            }
            _ => forwarded_headers(headers, self.peer, self.proto),
        }
    }
}

/// Join several `Cookie` fields into one, as HTTP/1.1 wants them (HTTP/2
/// clients send a field per cookie: RFC 9113, 8.2.3).
pub fn join_cookies(headers: &mut hyper::HeaderMap) {
    let mut all = headers.get_all(COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = hyper::HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn http2_cookie_fields_are_read_and_joined() {
        let mut h = hyper::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("SRVID=xyz"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(our_cookie(&h, "SRVID").as_deref(), Some("xyz"));
        strip_cookie(&mut h, "SRVID");
        join_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
        let mut one = hyper::HeaderMap::new();
        one.append(COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one.get(COOKIE).unwrap(), "a=1");
    }

    #[test]
    fn a_connections_forwarding_headers_are_made_once_and_appended_to() {
        let f = Forwarded::new("198.18.0.11:5000".parse().unwrap(), "https");
        let mut h = hyper::HeaderMap::new();
        f.add(&mut h);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "198.18.0.11");
        assert_eq!(h.get("forwarded").unwrap(), "for=198.18.0.11;proto=https");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        let mut h = hyper::HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        f.add(&mut h);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "203.0.113.9, 198.18.0.11"
        );
        assert_eq!(h.get("forwarded").unwrap(), "for=198.18.0.11;proto=https");
    }

    #[test]
    fn the_scheme_is_forwarded() {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("ftp"));
        forwarded_headers(&mut h, "198.18.0.11:5000".parse().unwrap(), "https");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("forwarded").unwrap(), "for=198.18.0.11;proto=https");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "198.18.0.11");
    }

    #[test]
    fn our_cookie_is_stripped_and_the_others_kept() {
        let mut h = hyper::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; SRVID=xyz; b=2"));
        h.append(COOKIE, HeaderValue::from_static("SRVID=again"));
        strip_cookie(&mut h, "SRVID");
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
        let mut h = hyper::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("SRVID=xyz"));
        strip_cookie(&mut h, "SRVID");
        assert!(h.get(COOKIE).is_none());
    }

    #[test]
    fn cookies_that_are_not_ascii_pass_untouched() {
        let mut h = hyper::HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"name=Jos\xc3\xa9; SRVID=xyz; cart=\xff\xfe").unwrap(),
        );
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"lang=fran\xc3\xa7ais").unwrap(),
        );
        assert_eq!(our_cookie(&h, "SRVID").as_deref(), Some("xyz"));
        strip_cookie(&mut h, "SRVID");
        let left: Vec<&[u8]> = h
            .get_all(COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(
            left,
            vec![
                &b"name=Jos\xc3\xa9; cart=\xff\xfe"[..],
                &b"lang=fran\xc3\xa7ais"[..]
            ]
        );
        // Without our cookie, nothing is touched.
        let mut h = hyper::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"a=\xe9t\xe9;b").unwrap());
        let before = h.clone();
        strip_cookie(&mut h, "SRVID");
        assert_eq!(h, before);
    }

    #[test]
    fn a_backends_set_cookie_of_our_name_is_dropped() {
        let mut h = hyper::HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("PHPSESSID=1; path=/"));
        h.append(SET_COOKIE, HeaderValue::from_static("SRVID=evil; path=/"));
        drop_set_cookie(&mut h, "SRVID");
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, vec!["PHPSESSID=1; path=/"]);
    }

    #[test]
    fn the_client_is_appended_to_the_forwarding_headers() {
        let mut h = hyper::HeaderMap::new();
        let peer: SocketAddr = "198.18.0.11:5000".parse().unwrap();
        forwarded_headers(&mut h, peer, "http");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "198.18.0.11");
        assert_eq!(h.get("forwarded").unwrap(), "for=198.18.0.11;proto=http");
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        forwarded_headers(&mut h, peer, "http");
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "203.0.113.9, 198.18.0.11"
        );
    }
}
