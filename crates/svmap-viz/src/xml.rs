//! A small XML well-formedness checker, enough for the SVG this crate
//! writes (and for tests of pictures written elsewhere): one root element,
//! balanced and properly nested tags, quoted and unique attributes, only
//! the five predefined entities and character references, no `<` or bare
//! `&` in text or attribute values, no control characters.

/// The element names of a well-formed document, in document order, or the
/// first problem found with its byte offset.
pub fn check(doc: &str) -> Result<Vec<String>, String> {
    let b = doc.as_bytes();
    let mut i = 0;
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut roots = 0;
    let err = |i: usize, m: &str| Err(format!("at byte {i}: {m}"));
    for (k, c) in doc.char_indices() {
        if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') {
            return err(k, "control character");
        }
    }
    if doc.starts_with("<?xml") {
        match doc.find("?>") {
            Some(e) => i = e + 2,
            None => return err(0, "unterminated XML declaration"),
        }
    }
    while i < b.len() {
        if b[i] != b'<' {
            // Text.
            let end = doc[i..].find('<').map_or(b.len(), |e| i + e);
            check_text(&doc[i..end]).map_err(|m| format!("at byte {i}: {m}"))?;
            if stack.is_empty() && !doc[i..end].trim().is_empty() {
                return err(i, "text outside the root element");
            }
            i = end;
            continue;
        }
        let rest = &doc[i..];
        if rest.starts_with("<!--") {
            match rest.find("-->") {
                Some(e) => i += e + 3,
                None => return err(i, "unterminated comment"),
            }
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            match rest.find('>') {
                Some(e) => i += e + 1,
                None => return err(i, "unterminated declaration"),
            }
            continue;
        }
        let Some(e) = find_tag_end(rest) else {
            return err(i, "unterminated tag");
        };
        let tag = &rest[1..e];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim_end();
            match stack.pop() {
                Some(open) if open == name => {}
                Some(open) => return err(i, &format!("</{name}> closes <{open}>")),
                None => return err(i, &format!("</{name}> without an open tag")),
            }
        } else {
            let (body, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            if !valid_name(name) {
                return err(i, &format!("bad element name {name:?}"));
            }
            check_attrs(&body[name_end..]).map_err(|m| format!("at byte {i}: <{name}>: {m}"))?;
            if stack.is_empty() {
                roots += 1;
                if roots > 1 {
                    return err(i, "a second root element");
                }
            }
            names.push(name.to_owned());
            if !empty {
                stack.push(name.to_owned());
            }
        }
        i += e + 1;
    }
    if let Some(open) = stack.pop() {
        return Err(format!("<{open}> is never closed"));
    }
    if roots == 0 {
        return Err("no root element".into());
    }
    Ok(names)
}

fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (k, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(k),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

fn valid_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

fn check_text(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(k) = rest.find('&') {
        let after = &rest[k + 1..];
        let Some(semi) = after.find(';') else {
            return Err("bare '&'".into());
        };
        let ent = &after[..semi];
        let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
            || ent
                .strip_prefix("#x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || ent
                .strip_prefix('#')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(format!("unknown entity &{ent};"));
        }
        rest = &after[semi + 1..];
    }
    if t.contains('<') {
        return Err("'<' in text".into());
    }
    Ok(())
}

fn check_attrs(s: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!("attribute without a value: {rest:?}"));
        };
        let name = rest[..eq].trim();
        if !valid_name(name) {
            return Err(format!("bad attribute name {name:?}"));
        }
        if seen.contains(&name) {
            return Err(format!("duplicate attribute {name}"));
        }
        seen.push(name);
        let v = rest[eq + 1..].trim_start();
        let q = v.chars().next().ok_or("missing value")?;
        if q != '"' && q != '\'' {
            return Err(format!("unquoted value of {name}"));
        }
        let Some(close) = v[1..].find(q) else {
            return Err(format!("unterminated value of {name}"));
        };
        let val = &v[1..1 + close];
        check_text(val).map_err(|m| format!("{name}: {m}"))?;
        let after = &v[close + 2..];
        if !after.is_empty() && !after.starts_with(char::is_whitespace) {
            return Err(format!("no space after the value of {name}"));
        }
        rest = after.trim_start();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_and_rejects() {
        assert!(check("<?xml version=\"1.0\"?>\n<a x=\"1\"><b/>t &amp; &#x41;</a>\n").is_ok());
        for bad in [
            "<a><b></a>",
            "<a>",
            "<a x=1/>",
            "<a x=\"1\" x=\"2\"/>",
            "<a>&</a>",
            "<a>&nbsp;</a>",
            "<a/><b/>",
            "<a>x < y</a>",
            "<a t=\"<\"/>",
            "text",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
