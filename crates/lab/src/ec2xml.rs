//! Small text helpers for the EC2 fault front ([`super::front`]): the Query API's form-encoded request bodies and
//! the few XML rewrites the front makes in moto's responses. EC2's XML is regular enough (one `<instanceId>` per
//! instance, followed by its `<instanceState>`) that string edits are exact here; no general XML parsing is needed.

/// Decodes an `application/x-www-form-urlencoded` body into `(key, value)` pairs (`+` is a space, `%XX` a byte).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `Action` in a parsed form, or `""`.
pub fn action(form: &[(String, String)]) -> String {
    form.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Every `InstanceId.N` value of a parsed form.
pub fn instance_ids(form: &[(String, String)]) -> Vec<String> {
    form.iter().filter(|(k, _)| k.starts_with("InstanceId")).map(|(_, v)| v.clone()).collect()
}

/// EC2's numeric code for a state name (`State.Code`); 0 for an unknown name.
pub fn state_code(name: &str) -> u16 {
    match name {
        "pending" => 0,
        "running" => 16,
        "shutting-down" => 32,
        "terminated" => 48,
        "stopping" => 64,
        "stopped" => 80,
        _ => 0,
    }
}

/// Rewrites the `<instanceState>` of instance `id` in a DescribeInstances response to `state`. Returns the body
/// unchanged when the instance is not in it.
pub fn set_instance_state(xml: &str, id: &str, state: &str) -> String {
    let marker = format!("<instanceId>{id}</instanceId>");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(&marker) {
        let after = at + marker.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        // The state element of this instance comes before the next instance's id.
        let limit = rest.find("<instanceId>").unwrap_or(rest.len());
        let (Some(open), Some(close)) = (rest[..limit].find("<instanceState>"), rest[..limit].find("</instanceState>"))
        else {
            continue;
        };
        out.push_str(&rest[..open]);
        out.push_str(&format!(
            "<instanceState><code>{}</code><name>{state}</name>",
            state_code(state)
        ));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Replaces the `<output>` of a GetConsoleOutput response with `base64`.
pub fn set_console_output(xml: &str, base64: &str) -> String {
    match (xml.find("<output>"), xml.find("</output>")) {
        (Some(open), Some(close)) if open < close => {
            format!("{}<output>{base64}{}", &xml[..open], &xml[close..])
        }
        _ => match xml.rfind("</GetConsoleOutputResponse>") {
            Some(end) => format!("{}<output>{base64}</output>{}", &xml[..end], &xml[end..]),
            None => xml.to_string(),
        },
    }
}

/// An EC2 error response body.
pub fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message>\
         </Error></Errors><RequestID>bastionctl-lab-front</RequestID></Response>",
        escape(code),
        escape(message)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_is_decoded() {
        let f = parse_form(b"Action=DescribeInstances&InstanceId.1=i-abc&Filter.1.Value.1=a+b%2Fc&Version=2016-11-15");
        assert_eq!(action(&f), "DescribeInstances");
        assert_eq!(instance_ids(&f), vec!["i-abc".to_string()]);
        assert_eq!(f[2].1, "a b/c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn state_of_one_instance_is_rewritten() {
        let xml = "<item><instanceId>i-1</instanceId><x/><instanceState><code>16</code><name>running</name>\
                   </instanceState></item><item><instanceId>i-2</instanceId><instanceState><code>16</code>\
                   <name>running</name></instanceState></item>";
        let out = set_instance_state(xml, "i-2", "stopping");
        assert!(out.contains("<instanceId>i-1</instanceId><x/><instanceState><code>16</code><name>running</name>"));
        assert!(out.contains("<instanceId>i-2</instanceId><instanceState><code>64</code><name>stopping</name></instanceState>"));
        assert_eq!(set_instance_state(xml, "i-9", "pending"), xml);
    }

    #[test]
    fn console_output_is_replaced() {
        let xml = "<GetConsoleOutputResponse><instanceId>i-1</instanceId><output>b2xk</output></GetConsoleOutputResponse>";
        assert_eq!(
            set_console_output(xml, "bmV3"),
            "<GetConsoleOutputResponse><instanceId>i-1</instanceId><output>bmV3</output></GetConsoleOutputResponse>"
        );
    }
}
