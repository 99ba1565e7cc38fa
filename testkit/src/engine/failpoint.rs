//! Fault injection with mongod's own `configureFailPoint` shapes.
//!
//! Two failpoints are implemented, the ones the drivers' test suites use:
//! - `failCommand`: fail (`errorCode`, `errorLabels`, `writeConcernError`), delay
//!   (`blockConnection`/`blockTimeMS`) or drop the connection (`closeConnection`) for the
//!   commands named in `failCommands`, optionally only for one `appName`;
//! - `failGetMoreAfterCursorCheckout`: fail every `getMore` after its cursor is checked out
//!   (`errorCode`, `closeConnection`), which is how the change-stream resume tests inject
//!   errors.
//!
//! Modes: `"alwaysOn"`, `"off"`, `{times: n}`, `{skip: n}` (pass n matches, then stay on) and
//! `{activationProbability: p}`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bson::{Bson, Document};
use rand::Rng;

use crate::error::CommandError;

/// When a failpoint fires.
#[derive(Debug, Clone, PartialEq)]
pub enum FailPointMode {
    /// Never (the failpoint is disabled).
    Off,
    /// On every matching command.
    AlwaysOn,
    /// On the next `n` matching commands, then off.
    Times(u64),
    /// Let `n` matching commands pass, then on for every later one.
    Skip(u64),
    /// On each matching command with probability `p`.
    ActivationProbability(f64),
}

impl FailPointMode {
    fn parse(mode: Option<&Bson>) -> Result<FailPointMode, CommandError> {
        let count = |v: &Bson| -> Result<u64, CommandError> {
            let n = match v {
                Bson::Int32(n) => i64::from(*n),
                Bson::Int64(n) => *n,
                Bson::Double(d) if d.fract() == 0.0 => *d as i64,
                _ => {
                    return Err(CommandError::type_mismatch(
                        "'times' and 'skip' must be numbers",
                    ));
                }
            };
            u64::try_from(n).map_err(|_| CommandError::bad_value("mode count must be non-negative"))
        };
        match mode {
            Some(Bson::String(s)) if s == "alwaysOn" => Ok(FailPointMode::AlwaysOn),
            Some(Bson::String(s)) if s == "off" => Ok(FailPointMode::Off),
            Some(Bson::Document(d)) => {
                if let Some(v) = d.get("times") {
                    let n = count(v)?;
                    Ok(if n == 0 {
                        FailPointMode::Off
                    } else {
                        FailPointMode::Times(n)
                    })
                } else if let Some(v) = d.get("skip") {
                    Ok(FailPointMode::Skip(count(v)?))
                } else if let Some(p) = d.get("activationProbability") {
                    let p = match p {
                        Bson::Double(p) => *p,
                        Bson::Int32(p) => f64::from(*p),
                        Bson::Int64(p) => *p as f64,
                        _ => {
                            return Err(CommandError::type_mismatch(
                                "activationProbability must be a number",
                            ));
                        }
                    };
                    if !(0.0..=1.0).contains(&p) {
                        return Err(CommandError::bad_value(
                            "activationProbability must be between 0 and 1",
                        ));
                    }
                    Ok(FailPointMode::ActivationProbability(p))
                } else {
                    Err(CommandError::bad_value(
                        "'mode' must be one of 'off', 'alwaysOn', 'times', 'skip' and 'activationProbability'",
                    ))
                }
            }
            Some(Bson::String(other)) => {
                Err(CommandError::bad_value(format!("unknown mode: {other}")))
            }
            Some(_) => Err(CommandError::type_mismatch(
                "'mode' must be a string or a document",
            )),
            None => Err(CommandError::bad_value("missing mode")),
        }
    }

    /// Decides whether this evaluation fires, updating the counters.
    fn evaluate(&mut self) -> bool {
        match self {
            FailPointMode::Off => false,
            FailPointMode::AlwaysOn => true,
            FailPointMode::Times(n) => {
                *n -= 1;
                if *n == 0 {
                    *self = FailPointMode::Off;
                }
                true
            }
            FailPointMode::Skip(n) => {
                if *n == 0 {
                    true
                } else {
                    *n -= 1;
                    false
                }
            }
            FailPointMode::ActivationProbability(p) => rand::rng().random_bool(*p),
        }
    }
}

/// What a fired `failCommand` does to the command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailAction {
    /// Reply with this error code instead of running the command.
    pub error_code: Option<i32>,
    /// Labels for the error reply; `None` lets the server add its usual labels.
    pub error_labels: Option<Vec<String>>,
    /// Close the connection without replying.
    pub close_connection: bool,
    /// Sleep this many milliseconds before continuing.
    pub block_ms: Option<u64>,
    /// Run the command, then attach this `writeConcernError`.
    pub write_concern_error: Option<Document>,
    /// `errInfo`/extra fields to merge into the error reply (`errorExtraInfo`).
    pub extra_info: Option<Document>,
}

/// One configured failpoint: its mode and data.
#[derive(Debug, Clone)]
struct Configured {
    mode: FailPointMode,
    data: Document,
}

/// The names of the failpoints this server implements.
pub const FAIL_COMMAND: &str = "failCommand";
/// See the module docs.
pub const FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT: &str = "failGetMoreAfterCursorCheckout";

/// All failpoints of a server.
#[derive(Debug, Default)]
pub struct FailPoints {
    /// `failCommand` and `failGetMoreAfterCursorCheckout`; std mutex, never held across await.
    state: Mutex<(Option<Configured>, Option<Configured>)>,
    /// How often each has fired since the server started (mongod's `timesEntered`, which
    /// `configureFailPoint` replies as `count` and which never resets).
    entered: [AtomicU64; 2],
}

impl FailPoints {
    /// Applies a `configureFailPoint` command document (`{configureFailPoint: name, mode,
    /// data}`) and returns how often it has fired so far, as mongod's reply `count` does.
    pub fn configure(&self, command: &Document) -> Result<i64, CommandError> {
        let name = match command.get("configureFailPoint") {
            Some(Bson::String(s)) => s.as_str(),
            _ => {
                return Err(CommandError::type_mismatch(
                    "'configureFailPoint' must be the failpoint name",
                ));
            }
        };
        let mode = FailPointMode::parse(command.get("mode"))?;
        let data = match command.get("data") {
            Some(Bson::Document(d)) => d.clone(),
            None => Document::new(),
            Some(_) => return Err(CommandError::type_mismatch("'data' must be a document")),
        };
        if name == FAIL_COMMAND && mode != FailPointMode::Off {
            match data.get("failCommands") {
                Some(Bson::Array(a)) if a.iter().all(|v| matches!(v, Bson::String(_))) => {}
                _ => {
                    return Err(CommandError::bad_value(
                        "'failCommands' must be a non-empty array of strings",
                    ));
                }
            }
        }
        let configured = (mode != FailPointMode::Off).then_some(Configured { mode, data });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let index = match name {
            FAIL_COMMAND => {
                state.0 = configured;
                0
            }
            FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT => {
                state.1 = configured;
                1
            }
            other => {
                return Err(CommandError::bad_value(format!(
                    "Cannot find failpoint '{other}' (this server implements {FAIL_COMMAND} and {FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT})"
                )));
            }
        };
        let entered = self.entered[index].load(Ordering::Relaxed);
        Ok(i64::try_from(entered).unwrap_or(i64::MAX))
    }

    /// Disables every failpoint.
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = (None, None);
    }

    /// Evaluates `failCommand` for a command named `command` from a client named `app_name`.
    pub fn check_fail_command(&self, command: &str, app_name: Option<&str>) -> Option<FailAction> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let configured = state.0.as_mut()?;
        let data = &configured.data;
        let listed = matches!(data.get("failCommands"), Some(Bson::Array(a))
            if a.iter().any(|v| v.as_str() == Some(command)));
        if !listed {
            return None;
        }
        if let Some(Bson::String(wanted)) = data.get("appName")
            && app_name != Some(wanted.as_str())
        {
            return None;
        }
        if !configured.mode.evaluate() {
            return None;
        }
        self.entered[0].fetch_add(1, Ordering::Relaxed);
        let action = action_from(&configured.data);
        if configured.mode == FailPointMode::Off {
            state.0 = None;
        }
        Some(action)
    }

    /// Evaluates `failGetMoreAfterCursorCheckout` for a getMore.
    pub fn check_get_more_after_checkout(&self) -> Option<FailAction> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let configured = state.1.as_mut()?;
        if !configured.mode.evaluate() {
            return None;
        }
        self.entered[1].fetch_add(1, Ordering::Relaxed);
        let action = action_from(&configured.data);
        if configured.mode == FailPointMode::Off {
            state.1 = None;
        }
        Some(action)
    }
}

fn action_from(data: &Document) -> FailAction {
    let int = |key: &str| match data.get(key) {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Double(d)) => Some(*d as i64),
        _ => None,
    };
    let block = matches!(data.get("blockConnection"), Some(Bson::Boolean(true)));
    FailAction {
        error_code: int("errorCode").and_then(|c| i32::try_from(c).ok()),
        error_labels: match data.get("errorLabels") {
            Some(Bson::Array(a)) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => None,
        },
        close_connection: matches!(data.get("closeConnection"), Some(Bson::Boolean(true))),
        block_ms: if block {
            int("blockTimeMS").and_then(|n| u64::try_from(n).ok())
        } else {
            None
        },
        write_concern_error: match data.get("writeConcernError") {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        },
        extra_info: match data.get("errorExtraInfo") {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn times_mode_fires_n_times_for_listed_commands_only() {
        let fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "errorCode": 91, "errorLabels": ["X"]},
        })
        .unwrap();
        assert!(fps.check_fail_command("find", None).is_none());
        let a = fps.check_fail_command("insert", None).unwrap();
        assert_eq!(a.error_code, Some(91));
        assert_eq!(a.error_labels, Some(vec!["X".to_string()]));
        assert!(fps.check_fail_command("insert", None).is_some());
        assert!(fps.check_fail_command("insert", None).is_none());
    }

    #[test]
    fn skip_mode_and_app_name_filter() {
        let fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand",
            "mode": {"skip": 1},
            "data": {"failCommands": ["find"], "closeConnection": true, "appName": "a"},
        })
        .unwrap();
        assert!(fps.check_fail_command("find", Some("b")).is_none());
        assert!(fps.check_fail_command("find", Some("a")).is_none());
        assert!(
            fps.check_fail_command("find", Some("a"))
                .unwrap()
                .close_connection
        );
        assert!(fps.check_fail_command("find", Some("a")).is_some());
        fps.configure(&doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .unwrap();
        assert!(fps.check_fail_command("find", Some("a")).is_none());
    }

    #[test]
    fn bad_shapes_are_rejected_with_server_codes() {
        let fps = FailPoints::default();
        let e = fps
            .configure(&doc! {"configureFailPoint": "nope", "mode": "alwaysOn", "data": {}})
            .unwrap_err();
        assert_eq!(e.code, 2);
        let e = fps
            .configure(&doc! {"configureFailPoint": "failCommand", "mode": "sometimes"})
            .unwrap_err();
        assert_eq!(e.code, 2);
    }
}
