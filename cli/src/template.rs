//! `--template` and `--template-file`: Go `text/template` (through `gtmpl`) over the same
//! model `--json` prints.
//!
//! Fields are reached by their JSON names (`{{ .identifier }}`) or, as in upstream's Go
//! models, capitalized (`{{ .Identifier }}`, `{{ .Alpha.Path }}`). Maps of user data (labels,
//! environments) keep their keys as they are. Functions: Go's built-ins (`len`, `index`,
//! `printf`, `eq`...), `json` (compact JSON of a value, without a trailing newline) and
//! `shellSanitize` (a string quoted for a POSIX shell). Unlike Go, `range` over a map visits
//! its keys in no particular order (gtmpl keeps maps unordered).

use std::collections::HashMap;

use anyhow::Context as _;
use gtmpl::{Context, FuncError, Value};

/// The key, unreachable from a template (it holds a NUL), under which an object keeps the
/// JSON it was made from, for `json`.
const ORIGINAL: &str = "\0json";

/// Keys whose values are maps of user data, not models.
const USER_MAPS: [&str; 3] = ["labels", "environment", "parameters"];

/// A parsed template.
pub struct Template(gtmpl::Template);

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.0.text).finish()
    }
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// A syntax error, with gtmpl's description.
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let mut template = gtmpl::Template::default();
        template.add_func("json", json);
        template.add_func("shellSanitize", shell_sanitize);
        template.add_func("len", len);
        template
            .parse(text)
            .map_err(|error| anyhow::anyhow!("invalid template {text:?}: {error}"))?;
        Ok(Template(template))
    }

    /// Renders the template over `value`.
    ///
    /// # Errors
    /// A template that fails on this value (a function given the wrong arguments...).
    pub fn render(&self, value: &serde_json::Value) -> anyhow::Result<String> {
        self.0
            .render(&Context::from(model(value)))
            .map_err(|error| anyhow::anyhow!("{error}"))
            .context("the template failed")
    }
}

/// A JSON value as a template value: objects get capitalized aliases and keep their JSON.
fn model(value: &serde_json::Value) -> Value {
    convert(value, false)
}

fn convert(value: &serde_json::Value, user_map: bool) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(flag) => Value::Bool(*flag),
        serde_json::Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(unsigned), _) => Value::from(unsigned),
            (None, Some(signed)) => Value::from(signed),
            _ => Value::from(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => Value::String(text.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(model).collect()),
        serde_json::Value::Object(fields) => {
            let mut map = HashMap::new();
            for (key, field) in fields {
                let converted = convert(field, USER_MAPS.contains(&key.as_str()));
                if !user_map
                    && let Some(first) = key.chars().next().filter(char::is_ascii_lowercase)
                {
                    let alias = format!("{}{}", first.to_ascii_uppercase(), &key[1..]);
                    map.entry(alias).or_insert_with(|| converted.clone());
                }
                map.insert(key.clone(), converted);
            }
            if user_map {
                return Value::Map(map);
            }
            map.insert(ORIGINAL.to_owned(), Value::String(value.to_string()));
            Value::Object(map)
        }
    }
}

/// The JSON of a template value (objects from the model print as `--json` does).
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                unsigned.into()
            } else if let Some(signed) = number.as_i64() {
                signed.into()
            } else {
                number.as_f64().map_or(serde_json::Value::Null, Into::into)
            }
        }
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(map) | Value::Map(map) => {
            if let Some(Value::String(original)) = map.get(ORIGINAL)
                && let Ok(parsed) = serde_json::from_str(original)
            {
                return parsed;
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter().map(|key| (key.clone(), to_json(&map[key]))).collect(),
            )
        }
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let [value] = args else { return Err(FuncError::ExactlyXArgs("json".into(), 1)) };
    Ok(Value::String(to_json(value).to_string()))
}

/// Go's `len`, for maps too (gtmpl's only counts strings, arrays and objects).
fn len(args: &[Value]) -> Result<Value, FuncError> {
    let [value] = args else { return Err(FuncError::ExactlyXArgs("len".into(), 1)) };
    let count = match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.len(),
        Value::Map(map) => map.len(),
        Value::Object(_) => to_json(value).as_object().map_or(0, serde_json::Map::len),
        other => return Err(FuncError::Generic(format!("unable to call len on {other}"))),
    };
    Ok(Value::from(count))
}

fn shell_sanitize(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::String(text)] = args else {
        return Err(FuncError::Generic("shellSanitize requires one string".into()));
    };
    Ok(Value::String(format!("'{}'", text.replace('\'', r"'\''"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, value: serde_json::Value) -> String {
        Template::parse(template).expect("parse").render(&value).expect("render")
    }

    #[test]
    fn templates_reach_fields_by_json_and_go_names() {
        let sessions = serde_json::json!([
            {"identifier": "sync_a", "name": "web", "labels": {"env": "dev", "io.x/y": "1"},
             "alpha": {"path": "/a", "connected": true}, "successfulCycles": 4},
            {"identifier": "sync_b", "name": "", "labels": {},
             "alpha": {"path": "/b", "connected": false}, "successfulCycles": 0},
        ]);
        // (template, output)
        let cases = [
            ("{{ range . }}{{ .identifier }} {{ end }}", "sync_a sync_b "),
            ("{{ range . }}{{ .Identifier }}:{{ .Alpha.Path }};{{ end }}", "sync_a:/a;sync_b:/b;"),
            ("{{ len . }}", "2"),
            ("{{ len (index . 0).labels }} {{ len (index . 0).alpha }}", "2 2"),
            ("{{ (index . 0).labels.env }}", "dev"),
            ("{{ range $k, $v := (index . 1).Labels }}{{ $k }}={{ $v }},{{ end }}", ""),
            (
                "{{ range $k, $v := (index . 0).Labels }}{{ if eq $k \"env\" }}{{ $v }}{{ end }}{{ end }}",
                "dev",
            ),
            ("{{ range . }}{{ if .alpha.connected }}{{ .name }}{{ end }}{{ end }}", "web"),
            (
                "{{ range . }}{{ if eq .successfulCycles 0 }}new:{{ .identifier }}{{ end }}{{ end }}",
                "new:sync_b",
            ),
            (
                "{{ printf \"%s has %d\" (index . 0).name (index . 0).successfulCycles }}",
                "web has 4",
            ),
            ("{{ json (index . 1).labels }}", "{}"),
            ("{{ shellSanitize \"it's\" }}", r"'it'\''s'"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template, sessions.clone()), expected, "{template}");
        }
        // `json` prints the model as --json does: JSON names only, no aliases.
        assert_eq!(render("{{ json . }}", sessions.clone()), sessions.to_string());
        assert_eq!(
            render("{{ range . }}{{ json .alpha }}{{ end }}", sessions),
            r#"{"connected":true,"path":"/a"}{"connected":false,"path":"/b"}"#
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        let error = Template::parse("{{ range . }").expect_err("unclosed").to_string();
        assert!(error.starts_with("invalid template"), "{error}");
        let error = Template::parse("{{ nosuch . }}").map(|_| ()).expect_err("unknown function");
        assert!(error.to_string().contains("invalid template"), "{error}");
        let template = Template::parse("{{ json }}").expect("parse");
        assert!(template.render(&serde_json::json!([])).is_err());
    }
}
