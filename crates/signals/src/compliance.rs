//! Compliance policies (the Hexnode model): basic toggles plus advanced rules over any
//! posture attribute, evaluated into compliant / non-compliant / unknown with each failing
//! check as words for the remediation page.
//!
//! Evaluation is pure. A missing attribute makes the check it feeds *unknown*, not failed:
//! a definite failure anywhere makes the device non-compliant; otherwise any unknown
//! makes the verdict unknown (the policy engine decides what unknown means).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use stepgate_policy::version::{compare_versions, looks_like_version};
use stepgate_policy::{FailingCheck, PostureValue};

use crate::config::{CompliancePolicyConfig, ComplianceRuleConfig};

/// A compliance configuration error, naming the policy/rule and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComplianceConfigError {
    /// A rule expression did not parse.
    #[error(
        "compliance policy `{policy}`, rule `{rule}`: {message} at column {column} in `{}`",
        excerpt(expr, *column)
    )]
    Expression {
        /// Policy name.
        policy: String,
        /// Rule id.
        rule: String,
        /// The expression text.
        expr: String,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Two policies share a name.
    #[error("compliance policy name `{0}` is used twice; give each policy a unique name")]
    DuplicatePolicy(String),
    /// A rule id is empty or reused within a policy.
    #[error("compliance policy `{policy}`: rule id `{rule}` is empty or used twice; give each rule a unique id")]
    BadRuleId {
        /// Policy name.
        policy: String,
        /// Rule id.
        rule: String,
    },
    /// `min_edr_score` above 100.
    #[error("compliance policy `{policy}`: min_edr_score {score} is above 100; use 0–100")]
    EdrScoreRange {
        /// Policy name.
        policy: String,
        /// Configured value.
        score: u8,
    },
}

/// A compiled compliance policy.
#[derive(Clone, Debug)]
pub struct CompliancePolicy {
    /// Policy name.
    pub name: String,
    platforms: Vec<String>,
    groups: Vec<String>,
    checks: Vec<Check>,
}

#[derive(Clone, Debug)]
enum Check {
    /// Attribute must be `expected`.
    Flag {
        id: &'static str,
        attr: &'static str,
        expected: bool,
        message: &'static str,
        fix: &'static str,
        missing: &'static str,
    },
    MinOsVersion(String),
    MinEdrScore(u8),
    Rule {
        id: String,
        expr: Expr,
        message: Option<String>,
        fix: Option<String>,
    },
}

/// The verdict for one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ComplianceVerdict {
    /// `Some(true)` compliant, `Some(false)` non-compliant, `None` unknown.
    pub compliant: Option<bool>,
    /// Checks that failed, with messages for the remediation page.
    pub failing: Vec<FailingCheck>,
    /// Checks that could not be decided (attribute not reported, posture too old).
    pub unknown: Vec<FailingCheck>,
    /// Names of the policies that applied.
    pub policies: Vec<String>,
}

impl ComplianceVerdict {
    fn finish(mut self) -> Self {
        self.compliant = if !self.failing.is_empty() {
            Some(false)
        } else if !self.unknown.is_empty() {
            None
        } else {
            Some(true)
        };
        self
    }
}

/// Compiles the configured policies, checking names and rule expressions.
pub fn compile_policies(
    configs: &[CompliancePolicyConfig],
) -> Result<Vec<CompliancePolicy>, ComplianceConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for c in configs {
        if !seen.insert(c.name.clone()) {
            return Err(ComplianceConfigError::DuplicatePolicy(c.name.clone()));
        }
        out.push(CompliancePolicy::compile(c)?);
    }
    Ok(out)
}

impl CompliancePolicy {
    /// Compiles one policy.
    pub fn compile(c: &CompliancePolicyConfig) -> Result<Self, ComplianceConfigError> {
        let mut checks = Vec::new();
        if c.require_password_compliant {
            checks.push(Check::Flag {
                id: "password_compliant",
                attr: "password_compliant",
                expected: true,
                message: "The device password does not meet the password policy",
                fix: "Set a device passcode/password that meets the organisation's password policy",
                missing: "Password compliance was not reported",
            });
        }
        if c.require_encryption {
            checks.push(Check::Flag {
                id: "disk_encryption",
                attr: "encrypted",
                expected: true,
                message: "Disk encryption is off",
                fix: "Turn on disk encryption (FileVault on macOS, BitLocker on Windows, device encryption on Android)",
                missing: "Disk encryption status was not reported",
            });
        }
        if c.block_jailbroken {
            checks.push(Check::Flag {
                id: "jailbroken",
                attr: "jailbroken",
                expected: false,
                message: "The device is jailbroken or rooted",
                fix: "Restore the device to its manufacturer's operating system",
                missing: "Jailbreak/root status was not reported",
            });
        }
        if c.require_geofence {
            checks.push(Check::Flag {
                id: "geofence",
                attr: "inside_geofence",
                expected: true,
                message: "The device is outside the allowed area",
                fix: "Use this device from an allowed location",
                missing: "The device's location was not reported",
            });
        }
        if c.require_firewall {
            checks.push(Check::Flag {
                id: "firewall",
                attr: "firewall",
                expected: true,
                message: "The firewall is off",
                fix: "Turn on the firewall in the system settings",
                missing: "Firewall status was not reported",
            });
        }
        if c.require_screen_lock {
            checks.push(Check::Flag {
                id: "screen_lock",
                attr: "screen_lock",
                expected: true,
                message: "Screen lock is not enabled",
                fix: "Turn on automatic screen lock with a passcode",
                missing: "Screen lock status was not reported",
            });
        }
        if let Some(v) = &c.min_os_version {
            checks.push(Check::MinOsVersion(v.trim().to_owned()));
        }
        if let Some(s) = c.min_edr_score {
            if s > 100 {
                return Err(ComplianceConfigError::EdrScoreRange {
                    policy: c.name.clone(),
                    score: s,
                });
            }
            checks.push(Check::MinEdrScore(s));
        }
        let mut ids = std::collections::BTreeSet::new();
        for r in &c.rules {
            if r.id.trim().is_empty() || !ids.insert(r.id.clone()) {
                return Err(ComplianceConfigError::BadRuleId {
                    policy: c.name.clone(),
                    rule: r.id.clone(),
                });
            }
            checks.push(compile_rule(&c.name, r)?);
        }
        Ok(CompliancePolicy {
            name: c.name.clone(),
            platforms: c.platforms.iter().map(|p| p.to_ascii_lowercase()).collect(),
            groups: c.groups.clone(),
            checks,
        })
    }

    /// Whether the policy is assigned to a device of this platform and these groups.
    pub fn applies_to(&self, platform: Option<&str>, groups: &[String]) -> bool {
        let platform_ok = self.platforms.is_empty()
            || platform.is_some_and(|p| self.platforms.iter().any(|q| q.eq_ignore_ascii_case(p)));
        let group_ok = self.groups.is_empty() || self.groups.iter().any(|g| groups.contains(g));
        platform_ok && group_ok
    }

    fn evaluate_into(&self, posture: &BTreeMap<String, PostureValue>, out: &mut ComplianceVerdict) {
        for check in &self.checks {
            match check {
                Check::Flag {
                    id,
                    attr,
                    expected,
                    message,
                    fix,
                    missing,
                } => match posture.get(*attr).and_then(|v| parse_bool(&v.0)) {
                    Some(b) if b == *expected => {}
                    Some(_) => out.failing.push(check_msg(id, message.to_string(), fix)),
                    None => out.unknown.push(check_msg(id, missing.to_string(), fix)),
                },
                Check::MinOsVersion(min) => match posture.get("os_version") {
                    Some(v) if looks_like_version(&v.0) => {
                        if compare_versions(&v.0, min) == Ordering::Less {
                            out.failing.push(check_msg(
                                "os_version",
                                format!("OS {} is below the required {min}", v.0),
                                &format!("Update the operating system to {min} or later"),
                            ));
                        }
                    }
                    _ => out.unknown.push(check_msg(
                        "os_version",
                        "The OS version was not reported".into(),
                        &format!("Update the operating system to {min} or later"),
                    )),
                },
                Check::MinEdrScore(min) => match posture
                    .get("edr_score")
                    .and_then(|v| v.0.trim().parse::<f64>().ok())
                {
                    Some(s) if s >= f64::from(*min) => {}
                    Some(s) => out.failing.push(check_msg(
                        "edr_score",
                        format!("EDR score {s} is below the required {min}"),
                        "Resolve the issues your endpoint security agent reports",
                    )),
                    None => out.unknown.push(check_msg(
                        "edr_score",
                        "No EDR score was reported".into(),
                        "Make sure the endpoint security agent is installed and running",
                    )),
                },
                Check::Rule {
                    id,
                    expr,
                    message,
                    fix,
                } => match expr.eval(posture) {
                    Some(false) => {}
                    Some(true) => out.failing.push(FailingCheck {
                        id: id.clone(),
                        message: Some(
                            message
                                .clone()
                                .unwrap_or_else(|| format!("Device matches `{expr}`")),
                        ),
                        fix: fix.clone(),
                    }),
                    None => out.unknown.push(FailingCheck {
                        id: id.clone(),
                        message: Some(format!(
                            "Could not check `{expr}`: an attribute was not reported"
                        )),
                        fix: fix.clone(),
                    }),
                },
            }
        }
    }
}

fn check_msg(id: &str, message: String, fix: &str) -> FailingCheck {
    FailingCheck {
        id: id.to_owned(),
        message: Some(message),
        fix: Some(fix.to_owned()),
    }
}

/// Evaluates every policy that applies to the device (by platform and groups).
///
/// `posture` is the device's attribute view (see [`crate::device::Device::posture_view`]).
/// No applicable policy: compliant.
pub fn evaluate(
    policies: &[CompliancePolicy],
    platform: Option<&str>,
    groups: &[String],
    posture: &BTreeMap<String, PostureValue>,
) -> ComplianceVerdict {
    let mut v = ComplianceVerdict::default();
    for p in policies.iter().filter(|p| p.applies_to(platform, groups)) {
        v.policies.push(p.name.clone());
        p.evaluate_into(posture, &mut v);
    }
    dedup_checks(&mut v.failing);
    dedup_checks(&mut v.unknown);
    v.finish()
}

/// The verdict when the posture is older than `max_posture_age`: unknown, naming why.
pub fn stale_verdict(
    policies: &[CompliancePolicy],
    platform: Option<&str>,
    groups: &[String],
    age_desc: &str,
) -> ComplianceVerdict {
    let applied: Vec<String> = policies
        .iter()
        .filter(|p| p.applies_to(platform, groups))
        .map(|p| p.name.clone())
        .collect();
    ComplianceVerdict {
        compliant: None,
        failing: Vec::new(),
        unknown: vec![FailingCheck {
            id: "posture_stale".into(),
            message: Some(format!(
                "The device's posture is out of date (last reported {age_desc})"
            )),
            fix: Some("Open the device management app and sync, then re-check the device".into()),
        }],
        policies: applied,
    }
}

fn dedup_checks(v: &mut Vec<FailingCheck>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|c| seen.insert((c.id.clone(), c.message.clone())));
}

/// Reads a posture value as a boolean (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Rule expressions

/// How deeply a rule expression may nest parentheses and `NOT`s. The parser, the evaluator
/// and the printer recurse once per level, so an unbounded expression in the configuration
/// could overflow the stack of whichever thread reloads it; 64 is far beyond any rule a
/// person writes.
pub const MAX_EXPR_DEPTH: usize = 64;

/// The expression as quoted in an error: whole when short, else the 60 characters around
/// the column (a 10 kB expression would drown the message).
fn excerpt(expr: &str, column: usize) -> String {
    const WIDTH: usize = 60;
    let n = expr.chars().count();
    if n <= WIDTH {
        return expr.to_owned();
    }
    let start = column.saturating_sub(WIDTH / 2 + 1).min(n - WIDTH);
    let mut out: String = expr.chars().skip(start).take(WIDTH).collect();
    if start > 0 {
        out.insert(0, '…');
    }
    if start + WIDTH < n {
        out.push('…');
    }
    out
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A parsed rule expression (three-valued: a missing attribute is unknown).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `attr op value`
    Cmp {
        /// Posture attribute name.
        attr: String,
        /// Operator.
        op: CmpOp,
        /// Literal.
        value: String,
    },
    /// All hold.
    And(Vec<Expr>),
    /// Any holds.
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Cmp { attr, op, value } => write!(f, "{attr} {} {value}", op.as_str()),
            Expr::And(v) | Expr::Or(v) => {
                let sep = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                f.write_str("(")?;
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Not(e) => write!(f, "NOT {e}"),
        }
    }
}

impl Expr {
    /// Parses `os_version < 15.0 OR filevault == false`; the error is (column, message).
    pub fn parse(s: &str) -> Result<Expr, (usize, String)> {
        let toks = tokenize(s)?;
        let mut p = Parser {
            toks,
            pos: 0,
            len: s.chars().count(),
            depth: 0,
        };
        let e = p.or()?;
        if let Some(t) = p.toks.get(p.pos) {
            return Err((
                t.col,
                format!("unexpected `{}`; expected AND, OR or the end", t.text),
            ));
        }
        Ok(e)
    }

    /// Evaluates against posture attributes (Kleene logic).
    pub fn eval(&self, posture: &BTreeMap<String, PostureValue>) -> Option<bool> {
        match self {
            Expr::Cmp { attr, op, value } => {
                let actual = posture.get(attr)?;
                compare(&actual.0, *op, value)
            }
            Expr::And(v) => {
                let mut unknown = false;
                for e in v {
                    match e.eval(posture) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown {
                    None
                } else {
                    Some(true)
                }
            }
            Expr::Or(v) => {
                let mut unknown = false;
                for e in v {
                    match e.eval(posture) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown {
                    None
                } else {
                    Some(false)
                }
            }
            Expr::Not(e) => e.eval(posture).map(|b| !b),
        }
    }
}

fn compare(actual: &str, op: CmpOp, literal: &str) -> Option<bool> {
    if let Some(lb) = parse_bool_literal(literal) {
        let ab = parse_bool(actual)?;
        return match op {
            CmpOp::Eq => Some(ab == lb),
            CmpOp::Ne => Some(ab != lb),
            _ => None,
        };
    }
    let ord = if looks_like_version(literal) {
        if !looks_like_version(actual) {
            return match op {
                CmpOp::Eq => Some(false),
                CmpOp::Ne => Some(true),
                _ => None,
            };
        }
        compare_versions(actual.trim(), literal)
    } else {
        let a = actual.trim().to_lowercase();
        let b = literal.to_lowercase();
        a.cmp(&b)
    };
    Some(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn parse_bool_literal(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    Ident,
    Str,
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: TokKind,
    text: String,
    col: usize,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, (usize, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op2 = match two.as_str() {
            "==" => Some(CmpOp::Eq),
            "!=" => Some(CmpOp::Ne),
            "<=" => Some(CmpOp::Le),
            ">=" => Some(CmpOp::Ge),
            "&&" => {
                out.push(Tok {
                    kind: TokKind::And,
                    text: two.clone(),
                    col,
                });
                i += 2;
                continue;
            }
            "||" => {
                out.push(Tok {
                    kind: TokKind::Or,
                    text: two.clone(),
                    col,
                });
                i += 2;
                continue;
            }
            _ => None,
        };
        if let Some(op) = op2 {
            out.push(Tok {
                kind: TokKind::Op(op),
                text: two,
                col,
            });
            i += 2;
            continue;
        }
        match c {
            '<' | '>' | '=' => {
                let op = match c {
                    '<' => CmpOp::Lt,
                    '>' => CmpOp::Gt,
                    _ => CmpOp::Eq,
                };
                out.push(Tok {
                    kind: TokKind::Op(op),
                    text: c.to_string(),
                    col,
                });
                i += 1;
            }
            '!' => {
                out.push(Tok {
                    kind: TokKind::Not,
                    text: "!".into(),
                    col,
                });
                i += 1;
            }
            '(' => {
                out.push(Tok {
                    kind: TokKind::LParen,
                    text: "(".into(),
                    col,
                });
                i += 1;
            }
            ')' => {
                out.push(Tok {
                    kind: TokKind::RParen,
                    text: ")".into(),
                    col,
                });
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != quote {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err((col, format!("unterminated string; close it with {quote}")));
                }
                out.push(Tok {
                    kind: TokKind::Str,
                    text: chars[start..j].iter().collect(),
                    col,
                });
                i = j + 1;
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | ':') => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric()
                        || matches!(chars[i], '_' | '.' | '-' | '+' | ':'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let kind = match text.to_ascii_uppercase().as_str() {
                    "AND" => TokKind::And,
                    "OR" => TokKind::Or,
                    "NOT" => TokKind::Not,
                    _ => TokKind::Ident,
                };
                out.push(Tok { kind, text, col });
            }
            other => return Err((col, format!("unexpected character `{other}`"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    len: usize,
    /// Parentheses and `NOT`s open at the current token.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn end_col(&self) -> usize {
        self.len + 1
    }

    /// Opens one more level of nesting at `t` (a `(` or `NOT`), refusing past the limit
    /// before recursing.
    fn enter(&mut self, t: &Tok) -> Result<(), (usize, String)> {
        if self.depth >= MAX_EXPR_DEPTH {
            return Err((
                t.col,
                format!(
                    "the expression nests parentheses and NOT more than {MAX_EXPR_DEPTH} deep; \
                     simplify it or split it into several rules"
                ),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, (usize, String)> {
        let mut v = vec![self.and()?];
        while self.peek().is_some_and(|t| t.kind == TokKind::Or) {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, (usize, String)> {
        let mut v = vec![self.unary()?];
        while self.peek().is_some_and(|t| t.kind == TokKind::And) {
            self.pos += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self) -> Result<Expr, (usize, String)> {
        let Some(t) = self.peek().cloned() else {
            return Err((
                self.end_col(),
                "expression ends early; expected `attribute op value`".into(),
            ));
        };
        match t.kind {
            TokKind::Not => {
                self.enter(&t)?;
                self.pos += 1;
                let e = Expr::Not(Box::new(self.unary()?));
                self.depth -= 1;
                Ok(e)
            }
            TokKind::LParen => {
                self.enter(&t)?;
                self.pos += 1;
                let e = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(t) if t.kind == TokKind::RParen => {
                        self.pos += 1;
                        Ok(e)
                    }
                    Some(t) => Err((t.col, format!("expected `)`, found `{}`", t.text))),
                    None => Err((self.end_col(), "missing `)`".into())),
                }
            }
            TokKind::Ident => {
                self.pos += 1;
                let attr = t.text;
                let op = match self.peek() {
                    Some(Tok { kind: TokKind::Op(op), .. }) => *op,
                    Some(o) => {
                        return Err((o.col, format!("expected a comparison (==, !=, <, <=, >, >=) after `{attr}`, found `{}`", o.text)))
                    }
                    None => return Err((self.end_col(), format!("expected a comparison after `{attr}`"))),
                };
                let op_col = self.peek().map_or(0, |t| t.col);
                self.pos += 1;
                let value = match self.peek() {
                    Some(v) if matches!(v.kind, TokKind::Ident | TokKind::Str) => v.text.clone(),
                    Some(o) => {
                        return Err((
                            o.col,
                            format!(
                                "expected a value after `{}`, found `{}`",
                                op.as_str(),
                                o.text
                            ),
                        ))
                    }
                    None => {
                        return Err((
                            self.end_col(),
                            format!("expected a value after `{}`", op.as_str()),
                        ))
                    }
                };
                self.pos += 1;
                if !matches!(op, CmpOp::Eq | CmpOp::Ne) && parse_bool_literal(&value).is_some() {
                    return Err((
                        op_col,
                        format!("`{}` cannot order booleans; use == or !=", op.as_str()),
                    ));
                }
                Ok(Expr::Cmp { attr, op, value })
            }
            _ => Err((
                t.col,
                format!("expected an attribute name, NOT or `(`, found `{}`", t.text),
            )),
        }
    }
}

fn compile_rule(policy: &str, r: &ComplianceRuleConfig) -> Result<Check, ComplianceConfigError> {
    let expr = Expr::parse(&r.non_compliant_if).map_err(|(column, message)| {
        ComplianceConfigError::Expression {
            policy: policy.to_owned(),
            rule: r.id.clone(),
            expr: r.non_compliant_if.clone(),
            column,
            message,
        }
    })?;
    Ok(Check::Rule {
        id: r.id.clone(),
        expr,
        message: r.message.clone(),
        fix: r.fix.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posture(pairs: &[(&str, &str)]) -> BTreeMap<String, PostureValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PostureValue::from(*v)))
            .collect()
    }

    fn policy(f: impl FnOnce(&mut CompliancePolicyConfig)) -> Vec<CompliancePolicy> {
        let mut c = CompliancePolicyConfig {
            name: "p".into(),
            ..Default::default()
        };
        f(&mut c);
        compile_policies(&[c]).unwrap()
    }

    fn ids(v: &[FailingCheck]) -> Vec<&str> {
        v.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn toggle_password_compliant() {
        let p = policy(|c| c.require_password_compliant = true);
        let v = evaluate(&p, None, &[], &posture(&[("password_compliant", "false")]));
        assert_eq!(v.compliant, Some(false));
        assert_eq!(ids(&v.failing), ["password_compliant"]);
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("password_compliant", "true")])).compliant,
            Some(true)
        );
        assert_eq!(evaluate(&p, None, &[], &posture(&[])).compliant, None);
    }

    #[test]
    fn toggle_encryption() {
        let p = policy(|c| c.require_encryption = true);
        let v = evaluate(&p, None, &[], &posture(&[("encrypted", "false")]));
        assert_eq!(v.compliant, Some(false));
        assert_eq!(
            v.failing[0].message.as_deref(),
            Some("Disk encryption is off")
        );
        assert!(v.failing[0].fix.as_deref().unwrap().contains("FileVault"));
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("encrypted", "true")])).compliant,
            Some(true)
        );
    }

    #[test]
    fn toggle_jailbroken() {
        let p = policy(|c| c.block_jailbroken = true);
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("jailbroken", "true")])).compliant,
            Some(false)
        );
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("jailbroken", "false")])).compliant,
            Some(true)
        );
    }

    #[test]
    fn toggle_geofence() {
        let p = policy(|c| c.require_geofence = true);
        let v = evaluate(&p, None, &[], &posture(&[("inside_geofence", "false")]));
        assert_eq!(ids(&v.failing), ["geofence"]);
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("inside_geofence", "true")])).compliant,
            Some(true)
        );
    }

    #[test]
    fn toggle_min_os_version_is_version_aware() {
        let p = policy(|c| c.min_os_version = Some("15".into()));
        let v = evaluate(&p, None, &[], &posture(&[("os_version", "14.2.1")]));
        assert_eq!(v.compliant, Some(false));
        assert_eq!(
            v.failing[0].message.as_deref(),
            Some("OS 14.2.1 is below the required 15")
        );
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("os_version", "15.0")])).compliant,
            Some(true)
        );
        let p = policy(|c| c.min_os_version = Some("9.3".into()));
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("os_version", "15.0")])).compliant,
            Some(true)
        );
    }

    #[test]
    fn toggle_firewall_screen_lock_edr() {
        let p = policy(|c| {
            c.require_firewall = true;
            c.require_screen_lock = true;
            c.min_edr_score = Some(70);
        });
        let v = evaluate(
            &p,
            None,
            &[],
            &posture(&[
                ("firewall", "false"),
                ("screen_lock", "true"),
                ("edr_score", "40"),
            ]),
        );
        assert_eq!(ids(&v.failing), ["firewall", "edr_score"]);
        let ok = evaluate(
            &p,
            None,
            &[],
            &posture(&[
                ("firewall", "on"),
                ("screen_lock", "yes"),
                ("edr_score", "92"),
            ]),
        );
        assert_eq!(ok.compliant, Some(true));
    }

    #[test]
    fn failure_dominates_unknown() {
        let p = policy(|c| {
            c.require_encryption = true;
            c.require_firewall = true;
        });
        let v = evaluate(&p, None, &[], &posture(&[("encrypted", "false")]));
        assert_eq!(v.compliant, Some(false));
        assert_eq!(ids(&v.unknown), ["firewall"]);
    }

    fn rule(expr: &str) -> Vec<CompliancePolicy> {
        policy(|c| {
            c.rules.push(ComplianceRuleConfig {
                id: "r".into(),
                non_compliant_if: expr.into(),
                message: Some("Rule matched".into()),
                fix: None,
            })
        })
    }

    #[test]
    fn or_rule_with_versions() {
        let p = rule("os_version < 15.0 OR filevault == false");
        let e = |pairs: &[(&str, &str)]| evaluate(&p, None, &[], &posture(pairs)).compliant;
        assert_eq!(
            e(&[("os_version", "14.2.1"), ("filevault", "true")]),
            Some(false)
        );
        assert_eq!(
            e(&[("os_version", "15.1"), ("filevault", "false")]),
            Some(false)
        );
        assert_eq!(
            e(&[("os_version", "15.1"), ("filevault", "true")]),
            Some(true)
        );
        // 9.3 < 15.0 as versions even though "9.3" > "15.0" as text
        assert_eq!(
            e(&[("os_version", "9.3"), ("filevault", "true")]),
            Some(false)
        );
        // one side true decides even when the other is unknown
        assert_eq!(e(&[("os_version", "14")]), Some(false));
        assert_eq!(e(&[("os_version", "16")]), None);
    }

    #[test]
    fn and_not_parentheses() {
        let p = rule("(platform == macos AND os_version >= 14.2.1) AND NOT edr_running == true");
        let e = |pairs: &[(&str, &str)]| evaluate(&p, None, &[], &posture(pairs)).compliant;
        assert_eq!(
            e(&[
                ("platform", "macos"),
                ("os_version", "15"),
                ("edr_running", "false")
            ]),
            Some(false)
        );
        assert_eq!(
            e(&[
                ("platform", "macos"),
                ("os_version", "14.2"),
                ("edr_running", "false")
            ]),
            Some(true)
        );
        assert_eq!(
            e(&[
                ("platform", "windows"),
                ("os_version", "15"),
                ("edr_running", "false")
            ]),
            Some(true)
        );
        assert_eq!(
            e(&[
                ("platform", "macos"),
                ("os_version", "15"),
                ("edr_running", "true")
            ]),
            Some(true)
        );
        let p = rule("os_version > 9.3 && model != 'MacBookAir10,1' || jailbroken == true");
        let e = |pairs: &[(&str, &str)]| evaluate(&p, None, &[], &posture(pairs)).compliant;
        assert_eq!(
            e(&[
                ("os_version", "15.0"),
                ("model", "MacBookPro18,3"),
                ("jailbroken", "false")
            ]),
            Some(false)
        );
        assert_eq!(
            e(&[
                ("os_version", "15.0"),
                ("model", "MacBookAir10,1"),
                ("jailbroken", "false")
            ]),
            Some(true)
        );
    }

    #[test]
    fn bad_expressions_name_the_column() {
        for (expr, col) in [
            ("os_version <", 13),
            ("os_version 15", 12),
            ("(a == 1", 8),
            ("a == 1 b == 2", 8),
            ("encrypted < true", 11),
            ("a == 'x", 6),
            ("a == 1 OR", 10),
        ] {
            let mut c = CompliancePolicyConfig {
                name: "mac".into(),
                ..Default::default()
            };
            c.rules.push(ComplianceRuleConfig {
                id: "r1".into(),
                non_compliant_if: expr.into(),
                message: None,
                fix: None,
            });
            match compile_policies(&[c]) {
                Err(ComplianceConfigError::Expression {
                    column,
                    ref message,
                    ..
                }) => {
                    assert_eq!(column, col, "{expr}: {message}")
                }
                other => panic!("{expr}: {other:?}"),
            }
        }
    }

    fn compile_expr(expr: &str) -> Result<Vec<CompliancePolicy>, ComplianceConfigError> {
        let mut c = CompliancePolicyConfig {
            name: "mac".into(),
            ..Default::default()
        };
        c.rules.push(ComplianceRuleConfig {
            id: "deep".into(),
            non_compliant_if: expr.into(),
            message: None,
            fix: None,
        });
        compile_policies(&[c])
    }

    #[test]
    fn nesting_is_refused_past_the_limit_at_the_offending_column() {
        // At the limit: parses, evaluates and prints.
        let ok = format!(
            "{}a == 1{}",
            "(".repeat(MAX_EXPR_DEPTH),
            ")".repeat(MAX_EXPR_DEPTH)
        );
        let p = compile_expr(&ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            evaluate(&p, None, &[], &posture(&[("a", "1")])).compliant,
            Some(false)
        );
        let nots = format!("{}a == 1", "NOT ".repeat(MAX_EXPR_DEPTH));
        compile_expr(&nots).unwrap_or_else(|e| panic!("{e}"));
        // One past it, with parentheses, NOTs or a mix: refused at the level that crosses.
        for (expr, col) in [
            (format!("{}a == 1{}", "(".repeat(65), ")".repeat(65)), 65),
            (format!("{}a == 1", "NOT ".repeat(65)), 4 * 64 + 1),
            (format!("{}a == 1", "!(".repeat(40)), 2 * 32 + 1),
        ] {
            match compile_expr(&expr) {
                Err(e @ ComplianceConfigError::Expression { column, .. }) => {
                    assert_eq!(column, col, "{e}");
                    let text = e.to_string();
                    assert!(text.contains("more than 64 deep"), "{text}");
                    assert!(text.contains("split it into several rules"), "{text}");
                }
                other => panic!("{expr}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_huge_expression_is_refused_without_exhausting_a_small_stack() {
        // 100,000 levels would overflow any thread's stack if the parser recursed first and
        // checked after; the error quotes a short excerpt, not the whole text.
        let expr = format!("{}a == 1{}", "(".repeat(100_000), ")".repeat(100_000));
        let text = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || compile_expr(&expr).unwrap_err().to_string())
            .unwrap()
            .join()
            .unwrap();
        assert!(text.contains("at column 65 in `"), "{text}");
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
    }

    #[test]
    fn assignment_by_platform_and_group() {
        let p = policy(|c| {
            c.platforms = vec!["macOS".into()];
            c.groups = vec!["engineering".into()];
            c.require_encryption = true;
        });
        let bad = posture(&[("encrypted", "false")]);
        assert_eq!(
            evaluate(&p, Some("macos"), &["engineering".into()], &bad).compliant,
            Some(false)
        );
        assert_eq!(
            evaluate(&p, Some("windows"), &["engineering".into()], &bad).compliant,
            Some(true)
        );
        assert_eq!(
            evaluate(&p, Some("macos"), &["sales".into()], &bad).compliant,
            Some(true)
        );
        assert!(evaluate(&p, Some("macos"), &["sales".into()], &bad)
            .policies
            .is_empty());
    }

    #[test]
    fn duplicate_names_rejected() {
        let c = CompliancePolicyConfig {
            name: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            compile_policies(&[c.clone(), c]).unwrap_err(),
            ComplianceConfigError::DuplicatePolicy("x".into())
        );
    }
}
