//! `[waf]`: where the rules come from and how much of a request is inspected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::ffi::RuleSet;
use crate::layer::{Inner, WafLayer};

/// `SecRuleEngine`: what rule matches do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Engine {
    /// Rules run and their disruptive actions (deny, redirect) are applied.
    #[default]
    On,
    /// Rules run and log, but never block.
    DetectionOnly,
    /// Rules do not run.
    Off,
}

impl Engine {
    fn directive(self) -> &'static str {
        match self {
            Engine::On => "SecRuleEngine On\n",
            Engine::DetectionOnly => "SecRuleEngine DetectionOnly\n",
            Engine::Off => "SecRuleEngine Off\n",
        }
    }
}

/// `SecRequestBodyLimitAction`: what happens to a request body larger than
/// `request_body_limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum BodyLimitAction {
    /// Refuse the request with `413 Payload Too Large` (ModSecurity's `Reject`).
    #[default]
    Reject,
    /// Inspect the first `request_body_limit` bytes; the rest is forwarded uninspected.
    ProcessPartial,
}

/// The `[waf]` section.
///
/// ```toml
/// [waf]
/// rules_files = [
///   "/etc/modsecurity/crs/crs-setup.conf",
///   "/usr/share/modsecurity-crs/rules/*.conf",
/// ]
/// rules = ['SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403,msg:\'no debug\'"']
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafConfig {
    /// `SecRuleEngine`, given before the rules: a rules file that sets `SecRuleEngine`
    /// itself overrides it (the last directive wins, as in Apache).
    #[serde(default)]
    pub engine: Engine,
    /// Rule files, loaded in order, each glob's matches sorted by name (Apache's
    /// `Include conf/modsecurity/*.conf`). A glob that matches nothing is an error.
    /// Relative names are relative to the config file.
    #[serde(default)]
    pub rules_files: Vec<String>,
    /// Rules written in the config, loaded after the files (one directive per string, or
    /// several lines in one).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Inspect request bodies (`SecRequestBodyAccess`).
    #[serde(default = "yes")]
    pub request_body_access: bool,
    /// The most bytes of a request body held in memory for inspection
    /// (`SecRequestBodyLimit`; ModSecurity's default in-memory limit, 128 KiB, by default).
    #[serde(default = "default_body_limit")]
    pub request_body_limit: usize,
    /// What a larger body gets (`SecRequestBodyLimitAction`: `Reject` or `ProcessPartial`).
    #[serde(default)]
    pub request_body_limit_action: BodyLimitAction,
    /// Inspect response bodies (`SecResponseBodyAccess`, phase 4) of the types in
    /// `response_body_mime_types`. Such an answer is held back until its body, up to
    /// `response_body_limit`, has been read and inspected, so that a rule can still refuse
    /// it; other answers stream as before.
    #[serde(default)]
    pub response_body_access: bool,
    /// The most bytes of a response body held and inspected (`SecResponseBodyLimit`;
    /// ModSecurity's default, 512 KiB).
    #[serde(default = "default_response_body_limit")]
    pub response_body_limit: usize,
    /// What a larger response body gets (`SecResponseBodyLimitAction`): `ProcessPartial`
    /// (the default here, as in ModSecurity's recommended configuration: the first
    /// `response_body_limit` bytes are inspected, the whole answer is sent) or `Reject`
    /// (500).
    #[serde(default = "process_partial")]
    pub response_body_limit_action: BodyLimitAction,
    /// The media types whose bodies are inspected (`SecResponseBodyMimeType`).
    #[serde(default = "default_response_body_mime_types")]
    pub response_body_mime_types: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_body_limit() -> usize {
    128 * 1024
}

fn default_response_body_limit() -> usize {
    512 * 1024
}

fn process_partial() -> BodyLimitAction {
    BodyLimitAction::ProcessPartial
}

fn default_response_body_mime_types() -> Vec<String> {
    vec!["text/plain".into(), "text/html".into()]
}

impl Default for WafConfig {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            rules_files: Vec::new(),
            rules: Vec::new(),
            request_body_access: true,
            request_body_limit: default_body_limit(),
            request_body_limit_action: BodyLimitAction::default(),
            response_body_access: false,
            response_body_limit: default_response_body_limit(),
            response_body_limit_action: process_partial(),
            response_body_mime_types: default_response_body_mime_types(),
        }
    }
}

/// Why a `[waf]` section could not be turned into a layer.
#[derive(Debug, thiserror::Error)]
pub enum WafError {
    /// A rules file failed to load: ModSecurity's own message.
    #[error("waf.rules_files: `{file}`: {message}")]
    RulesFile {
        /// The file.
        file: PathBuf,
        /// ModSecurity's message.
        message: String,
    },
    /// A glob in `rules_files` matched no file, or could not be read.
    #[error("waf.rules_files: `{pattern}`: {message}")]
    Glob {
        /// The pattern as written.
        pattern: String,
        /// What went wrong.
        message: String,
    },
    /// Inline rules failed to load.
    #[error("waf.rules[{index}]: {message}")]
    Rules {
        /// Which string of `rules`.
        index: usize,
        /// ModSecurity's message.
        message: String,
    },
    /// A limit is out of range.
    #[error("waf.{key}: {message}")]
    Limit {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// This build has no libmodsecurity.
    #[error("waf: {0}")]
    Unavailable(String),
}

impl WafConfig {
    /// The rule files `rules_files` names, in load order; relative globs are taken
    /// relative to `base`.
    pub fn files(&self, base: &Path) -> Result<Vec<PathBuf>, WafError> {
        let mut out = Vec::new();
        for pattern in &self.rules_files {
            let full = if Path::new(pattern).is_relative() {
                base.join(pattern)
            } else {
                PathBuf::from(pattern)
            };
            let found = crate::glob::expand(&full).map_err(|message| WafError::Glob {
                pattern: pattern.clone(),
                message,
            })?;
            out.extend(found);
        }
        Ok(out)
    }

    /// Compiles the rules into a layer: the files from `rules_files` (relative to `base`),
    /// then `rules`. Rule parsing takes a while for the whole CRS (a few hundred
    /// milliseconds); do it once and clone the layer.
    pub fn build(&self, base: &Path) -> Result<WafLayer, WafError> {
        for (key, v) in [
            ("request_body_limit", self.request_body_limit),
            ("response_body_limit", self.response_body_limit),
        ] {
            if v == 0 || v > 1 << 30 {
                return Err(WafError::Limit {
                    key,
                    message: format!("{v} is out of range (1 byte to 1 GiB)"),
                });
            }
        }
        if let Some(bad) = self
            .response_body_mime_types
            .iter()
            .find(|t| !is_media_type(t))
        {
            return Err(WafError::Limit {
                key: "response_body_mime_types",
                message: format!("`{bad}` is not a media type like \"text/html\""),
            });
        }
        if !crate::ffi::AVAILABLE {
            return Err(WafError::Unavailable(
                RuleSet::new().err().unwrap_or_default(),
            ));
        }
        let files = self.files(base)?;
        let mut set = RuleSet::new().map_err(WafError::Unavailable)?;
        let on_off = |on: bool| if on { "On" } else { "Off" };
        // libmodsecurity gets no more of a response body than the limit: what a larger one
        // gets is decided here.
        let head = format!(
            "{}SecRequestBodyAccess {}\nSecResponseBodyAccess {}\nSecResponseBodyLimit {}\n\
             SecResponseBodyLimitAction ProcessPartial\nSecResponseBodyMimeType {}\n",
            self.engine.directive(),
            on_off(self.request_body_access),
            on_off(self.response_body_access),
            self.response_body_limit,
            self.response_body_mime_types.join(" "),
        );
        let head = if self.response_body_mime_types.is_empty() {
            head.replace(
                "SecResponseBodyMimeType \n",
                "SecResponseBodyMimeTypesClear\n",
            )
        } else {
            head
        };
        set.add_text(&head)
            .map_err(|message| WafError::Rules { index: 0, message })?;
        for file in files {
            set.add_file(&file)
                .map_err(|message| WafError::RulesFile { file, message })?;
        }
        for (index, rules) in self.rules.iter().enumerate() {
            set.add_text(rules)
                .map_err(|message| WafError::Rules { index, message })?;
        }
        Ok(WafLayer::from_inner(Inner::new(Arc::new(set), self)))
    }
}

/// `type/subtype`, in the characters a media type may have.
fn is_media_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    t.split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}
