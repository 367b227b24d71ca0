//! `sluice.toml`: which rules run and how loud they are, found upward from
//! the working directory (as rustfmt.toml or .editorconfig are).
//!
//! ```toml
//! exclude = ["charts/**"]              # paths every command's walks skip
//!
//! [lint]
//! fail-on = "warning"                 # default: error
//! inventory = ["cluster/inventory.yaml"]  # relative to this file
//!
//! [lint.rules]
//! SL060 = "off"                       # by code
//! http-unescaped-dot = "error"        # or by name
//! ```

use crate::{rule, Severity};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A rule's configured level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Off,
    Severity(Severity),
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Where it was read from (`None`: defaults).
    pub path: Option<PathBuf>,
    levels: HashMap<&'static str, Level>,
    /// Findings at or above this severity fail the run (exit 1).
    pub fail_on: Option<Severity>,
    /// Inventory files, resolved against the config file's directory.
    pub inventory: Vec<PathBuf>,
    /// Globs that directory walks of every command skip (`--exclude`).
    pub exclude: Vec<String>,
}

impl Config {
    /// The configured level of a rule, by code; `None`: its default.
    pub fn level(&self, code: &str) -> Option<Level> {
        self.levels.get(code).copied()
    }

    /// Sets a rule's level (by code or name).
    pub fn set(&mut self, code_or_name: &str, level: Level) -> Result<(), String> {
        let r = rule(code_or_name).ok_or_else(|| unknown_rule(code_or_name))?;
        self.levels.insert(r.code, level);
        Ok(())
    }

    /// The nearest `sluice.toml` in `start` or one of its parents.
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join("sluice.toml"))
            .find(|p| p.is_file())
    }

    /// Reads and checks a config file: unknown keys, rules and levels are
    /// errors (a typo must not silently turn a rule off).
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = policy_lang::read_text(path, 1 << 20)
            .map_err(|d| format!("{}: {}", path.display(), d.message))?;
        let mut c = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.inventory = c.inventory.iter().map(|p| base.join(p)).collect();
        c.path = Some(path.to_owned());
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
        let mut c = Config::default();
        for (key, value) in &table {
            if key == "exclude" {
                let list = value
                    .as_array()
                    .ok_or("`exclude` must be a list of globs")?;
                for g in list {
                    let g = g.as_str().ok_or("`exclude` must be a list of globs")?;
                    c.exclude.push(g.to_owned());
                }
                continue;
            }
            if key != "lint" {
                return Err(format!(
                    "unknown key `{key}` (sluice.toml has `exclude` and `[lint]`)"
                ));
            }
            let Some(lint) = value.as_table() else {
                return Err("`lint` must be a table".into());
            };
            for (k, v) in lint {
                match k.as_str() {
                    "fail-on" => {
                        let s = v.as_str().and_then(Severity::parse).ok_or_else(|| {
                            "`fail-on` must be \"error\", \"warning\" or \"note\"".to_owned()
                        })?;
                        c.fail_on = Some(s);
                    }
                    "inventory" => {
                        let list = v.as_array().ok_or("`inventory` must be a list of paths")?;
                        for p in list {
                            let p = p.as_str().ok_or("`inventory` must be a list of paths")?;
                            c.inventory.push(PathBuf::from(p));
                        }
                    }
                    "rules" => {
                        let rules = v.as_table().ok_or("`lint.rules` must be a table")?;
                        for (r, level) in rules {
                            let level = match level.as_str() {
                                Some("off") => Level::Off,
                                Some(s) => Level::Severity(Severity::parse(s).ok_or_else(|| {
                                    format!(
                                        "rule `{r}`: level `{s}` is not one of off, note, warning, error"
                                    )
                                })?),
                                None => {
                                    return Err(format!("rule `{r}`: the level must be a string"))
                                }
                            };
                            c.set(r, level)?;
                        }
                    }
                    other => {
                        return Err(format!(
                            "unknown key `lint.{other}` (known: fail-on, inventory, rules)"
                        ))
                    }
                }
            }
        }
        Ok(c)
    }
}

fn unknown_rule(name: &str) -> String {
    let names: Vec<&str> = crate::REGISTRY
        .iter()
        .flat_map(|r| [r.code, r.name])
        .collect();
    match policy_lang::suggest::did_you_mean(name, &names) {
        Some(s) => format!("unknown rule `{name}`; did you mean `{s}`?"),
        None => format!("unknown rule `{name}` (`sluice lint --list-rules` lists them)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_code_or_name_and_levels() {
        let c = Config::parse(
            "[lint]\nfail-on = \"warning\"\n[lint.rules]\nSL060 = \"off\"\nhttp-unescaped-dot = \"error\"\n",
        )
        .expect("valid");
        assert_eq!(c.fail_on, Some(Severity::Warning));
        assert_eq!(c.level("SL060"), Some(Level::Off));
        let dot = rule("http-unescaped-dot").expect("rule").code;
        assert_eq!(c.level(dot), Some(Level::Severity(Severity::Error)));
    }

    #[test]
    fn typos_are_errors_with_a_suggestion() {
        let e = Config::parse("[lint.rules]\nhttp-unescaped-dots = \"off\"\n").expect_err("typo");
        assert!(e.contains("did you mean `http-unescaped-dot`"), "{e}");
        let e = Config::parse("[lint]\nfail_on = \"error\"\n").expect_err("typo");
        assert!(e.contains("unknown key `lint.fail_on`"), "{e}");
        let e = Config::parse("[lint.rules]\nSL060 = \"loud\"\n").expect_err("level");
        assert!(e.contains("not one of off"), "{e}");
        assert!(Config::parse("[lint\n").is_err());
    }
}
