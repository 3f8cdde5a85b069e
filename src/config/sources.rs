//! Where a configuration's values come from besides the embedded default: a file merged over
//! it, and `MONETA_<SECTION>_<KEY>` environment variables typed like the default's value.

use super::ConfigError;

/// Merges `overlay` into `base`: tables recursively, everything else replaced.
pub(super) fn merge(base: &mut toml::Table, overlay: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (k, v) in overlay {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &path)?,
            (Some(toml::Value::Table(_)), _) => return Err(ConfigError(format!("key `{path}`: must be a table"))),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    Ok(())
}

/// Applies `MONETA_<SECTION>_<KEY>=value` to the table, typed like the default's value.
pub(super) fn apply_env(table: &mut toml::Table, schema: &toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let rest = &name["MONETA_".len()..];
    for (section, keys) in schema {
        let Some(keys) = keys.as_table() else { continue };
        let prefix = format!("{}_", section.to_ascii_uppercase());
        let Some(key_part) = rest.strip_prefix(&prefix) else { continue };
        let key = key_part.to_ascii_lowercase();
        let Some(default) = keys.get(&key) else { continue };
        let typed = match default {
            toml::Value::String(_) => toml::Value::String(value.to_string()),
            toml::Value::Integer(_) => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("variable {name}: `{value}` is not an integer")))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("variable {name}: `{value}` is not a number")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("variable {name}: `{value}` is not true or false")))?,
            ),
            // Comma-separated; an empty value is an empty list, and one comma after the last
            // entry (`a,b,`, as a shell loop writes a list — README's cluster recipe does) is
            // allowed. Any other empty entry (`a,,b`, `,`) is a mistake: a join list of nothing
            // but commas would form a cluster of its own.
            toml::Value::Array(_) if value.trim().is_empty() => toml::Value::Array(Vec::new()),
            toml::Value::Array(_) => {
                let trimmed = value.trim();
                let body = trimmed.strip_suffix(',').unwrap_or(trimmed);
                let entries: Vec<&str> = body.split(',').map(str::trim).collect();
                if entries.iter().any(|v| v.is_empty()) {
                    return Err(ConfigError(format!(
                        "variable {name}: `{value}` has an empty entry (a comma-separated list, e.g. host1:7070,host2:7070)"
                    )));
                }
                toml::Value::Array(entries.into_iter().map(|v| toml::Value::String(v.to_string())).collect())
            }
            _ => return Err(ConfigError(format!("variable {name}: `{section}.{key}` cannot be set from the environment"))),
        };
        if let Some(toml::Value::Table(t)) = table.get_mut(section) {
            t.insert(key, typed);
        }
        return Ok(());
    }
    Err(ConfigError(format!(
        "variable {name} names no configuration key (expected MONETA_<SECTION>_<KEY>, e.g. MONETA_GATEWAY_LISTEN)"
    )))
}
