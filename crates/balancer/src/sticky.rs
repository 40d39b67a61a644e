//! Finding a request's sticky route, as Apache's `stickysession` does: the value of a
//! path parameter (`;NAME=value`) or query parameter (`?NAME=value`), else of the cookie
//! `NAME`; the route is what follows the value's first `.` (`JSESSIONID=8F3A.a` names
//! route `a`). A value without a `.` names no route.

use http::Uri;
use http::header::{COOKIE, HeaderMap};

/// The route named by the request, borrowed from its URI or headers.
pub(crate) fn route<'a>(name: &str, uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let value = uri_param(name, uri).or_else(|| cookie(name, headers))?;
    let (_, route) = value.split_once('.')?;
    (!route.is_empty()).then_some(route)
}

fn uri_param<'a>(name: &str, uri: &'a Uri) -> Option<&'a str> {
    let pq = uri.path_and_query()?.as_str();
    let mut rest = pq;
    let mut offset = 0;
    while let Some(at) = rest.find(name) {
        let start = offset + at;
        let before = pq[..start].bytes().last();
        let after = &pq[start + name.len()..];
        if matches!(before, Some(b';' | b'?' | b'&')) {
            if let Some(value) = after.strip_prefix('=') {
                let end = value.find([';', '?', '&', '/', '#']).unwrap_or(value.len());
                return Some(&value[..end]);
            }
        }
        offset = start + name.len();
        rest = &pq[offset..];
    }
    None
}

fn cookie<'a>(name: &str, headers: &'a HeaderMap) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn find(uri: &str, cookies: &[&str]) -> Option<String> {
        let uri: Uri = uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        for c in cookies {
            headers.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        route("ROUTEID", &uri, &headers).map(str::to_owned)
    }

    #[test]
    fn cookie_route_after_first_dot() {
        assert_eq!(find("/", &["ROUTEID=.b"]), Some("b".into()));
        assert_eq!(find("/", &["x=1; ROUTEID=abc.a; y=2"]), Some("a".into()));
        assert_eq!(find("/", &["x=1", "ROUTEID=\"s.c\""]), Some("c".into()));
        assert_eq!(find("/", &["ROUTEID=1.a.b"]), Some("a.b".into()));
        assert_eq!(find("/", &["ROUTEID=nodot"]), None);
        assert_eq!(find("/", &["ROUTEID=x."]), None);
        assert_eq!(find("/", &["XROUTEID=.a"]), None);
        assert_eq!(find("/", &[]), None);
    }

    #[test]
    fn uri_parameters_win_over_the_cookie() {
        assert_eq!(
            find("/paid_user;ROUTEID=.a", &["ROUTEID=.b"]),
            Some("a".into())
        );
        assert_eq!(find("/x?q=1&ROUTEID=s.b&z=2", &[]), Some("b".into()));
        assert_eq!(find("/x?ROUTEID=s.b", &[]), Some("b".into()));
        assert_eq!(find("/x;ROUTEID=s.a/more", &[]), Some("a".into()));
        assert_eq!(find("/ROUTEID=.a", &[]), None);
        assert_eq!(find("/x?NOTROUTEID=.a&ROUTEID=.c", &[]), Some("c".into()));
    }
}
