//! A template's Rego source, read before regorus compiles it: what OPA and regorus parse
//! differently is rewritten to OPA's reading, and what gatehouse cannot honour is found.
//!
//! This is a lexer, not a parser: it tracks brackets, strings and comments, which is all the
//! rewrites and checks below need.
//!
//! - Gatekeeper compiles every template as `package template`; so does gatehouse.
//! - OPA v0 reads `head { a } { b }` as two rules with one head (either body suffices);
//!   regorus reads it as `else` (and refuses it for set rules). The head is repeated instead.
//! - OPA never continues a term across whitespace: `x := y` then a line starting with `(` or
//!   `[` is a new expression. regorus reads it as a call or index of `y`. A `;` is inserted.
//! - OPA evaluates the arguments of a negated call (`not f(a.b)`, `not a.b == 1`) before the
//!   negation: an undefined argument fails the rule body. regorus negates the undefined call
//!   (true). Reference and call arguments are bound first (`__gatehouse_not_0 := a.b; not
//!   f(__gatehouse_not_0)`), as OPA's compiler does.
//! - References to `data` other than `data.lib.*`, calls to functions regorus does not have
//!   (`external_data`, `http.send`, `time.now_ns`, ...) and reads of
//!   `input.review.namespaceObject` are reported, for the loader to refuse.

use std::collections::BTreeSet;

/// What the lexer saw in one module.
#[derive(Debug, Default)]
pub struct Scan {
    /// The package path as written (`k8sallowedrepos`, `lib.helpers`).
    pub package: String,
    /// The source with OPA's reading made explicit for regorus.
    pub rewritten: String,
    /// `data.<segment>` references other than `data.lib`, with their line (`""` for bare `data`).
    pub data_refs: Vec<(String, usize)>,
    /// Functions called (dotted names), with their line.
    pub calls: Vec<(String, usize)>,
    /// Rule and function names this module defines.
    pub defines: BTreeSet<String>,
    /// The line of a read of `namespaceObject`, if any.
    pub namespace_object: Option<usize>,
}

/// Why a module could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// No `package` line first.
    #[error("line {0}: expected a `package` declaration first")]
    NoPackage(usize),
    /// A string or raw string that never ends.
    #[error("line {0}: unterminated string")]
    Unterminated(usize),
    /// `not ... with ...`: the negated call's arguments cannot be bound first.
    #[error("line {0}: `not` with a `with` modifier is not supported")]
    NotWith(usize),
    /// More closing than opening brackets, or mismatched ones.
    #[error("line {0}: unbalanced brackets")]
    Unbalanced(usize),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num,
    Op(&'static str),
    Open(char),
    Close(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
    line: usize,
    /// Whitespace (or a comment) separates it from the previous token.
    spaced: bool,
    /// A newline separates it from the previous token.
    newline: bool,
}

const KEYWORDS: &[&str] = &[
    "package", "import", "as", "default", "not", "with", "some", "in", "every", "if", "else",
    "contains",
];

const OPS: &[&str] = &[
    ":=", "==", "!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%", "&", "|", ",", ";", ":",
    ".",
];

fn lex(src: &str) -> Result<Vec<Token>, ScanError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    let (mut spaced, mut newline) = (true, true);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                spaced = true;
                newline = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                spaced = true;
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                spaced = true;
                continue;
            }
            _ => {}
        }
        let (start, start_line) = (i, line);
        let tok = match c {
            b'"' => {
                i += 1;
                let mut text = String::new();
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => return Err(ScanError::Unterminated(start_line)),
                        Some(b'\\') => {
                            if let Some(&next) = bytes.get(i + 1) {
                                text.push(next as char);
                            }
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                            text.push(ch);
                            i += ch.len_utf8().max(1);
                        }
                    }
                }
                Tok::Str(text)
            }
            b'`' => {
                i += 1;
                let begin = i;
                while i < bytes.len() && bytes[i] != b'`' {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err(ScanError::Unterminated(start_line));
                }
                let text = src[begin..i].to_owned();
                i += 1;
                Tok::Str(text)
            }
            b'0'..=b'9' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                        || matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E'))
                {
                    i += 1;
                }
                Tok::Num
            }
            b'(' | b'[' | b'{' => {
                i += 1;
                Tok::Open(c as char)
            }
            b')' | b']' | b'}' => {
                i += 1;
                Tok::Close(c as char)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_owned())
            }
            _ => {
                let op = OPS
                    .iter()
                    .find(|op| src[i..].starts_with(*op))
                    .copied()
                    .unwrap_or("?");
                // Anything else (non-ASCII outside strings) is one character; regorus judges it.
                i += if op == "?" {
                    src[i..].chars().next().map_or(1, char::len_utf8)
                } else {
                    op.len()
                };
                Tok::Op(op)
            }
        };
        out.push(Token {
            tok,
            start,
            end: i,
            line: start_line,
            spaced,
            newline,
        });
        spaced = false;
        newline = false;
    }
    Ok(out)
}

fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

/// A token after which OPA's parser may continue a term (call, index, field).
fn ends_term(t: &Token) -> bool {
    match &t.tok {
        Tok::Ident(s) => !is_keyword(s),
        Tok::Str(_) | Tok::Num | Tok::Close(_) => true,
        Tok::Op(_) | Tok::Open(_) => false,
    }
}

/// A token after which a statement is not finished (the next line continues it).
fn continues(t: &Token) -> bool {
    match &t.tok {
        Tok::Op(_) | Tok::Open(_) => true,
        Tok::Ident(s) => matches!(s.as_str(), "else" | "if" | "contains" | "default" | "as"),
        _ => false,
    }
}

/// Reads a module. `package_to`: the package to declare instead (Gatekeeper's `template`).
/// `v0`: Rego v0 syntax, where chained rule bodies exist.
pub fn scan(src: &str, package_to: Option<&str>, v0: bool) -> Result<Scan, ScanError> {
    let toks = lex(src)?;
    let mut scan = Scan::default();
    // (start, end, text): `text` replaces `start..end` (an insertion when they are equal).
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut hoisted = 0usize;

    let first = toks.first().ok_or(ScanError::NoPackage(1))?;
    if first.tok != Tok::Ident("package".into()) {
        return Err(ScanError::NoPackage(first.line));
    }
    let mut i = 1;
    let mut package = String::new();
    let mut package_end = first.end;
    while let Some(t) = toks.get(i) {
        if t.newline {
            break;
        }
        match &t.tok {
            Tok::Ident(s) => package.push_str(s),
            Tok::Op(".") => package.push('.'),
            Tok::Open('[') | Tok::Close(']') => {}
            Tok::Str(s) => {
                package.push('.');
                package.push_str(s);
            }
            _ => break,
        }
        package_end = t.end;
        i += 1;
    }
    if package.is_empty() {
        return Err(ScanError::NoPackage(first.line));
    }
    scan.package = package;

    // Open brackets: (char, is a rule-level or nested body, index of the token).
    let mut stack: Vec<(char, bool)> = Vec::new();
    let mut statement_start: Option<usize> = None;
    let mut first_body: Option<usize> = None;
    let mut last_closed_body_at_top = false;
    for idx in i..toks.len() {
        let t = &toks[idx];
        let prev = idx.checked_sub(1).map(|p| &toks[p]);
        let depth = stack.len();

        // A new statement: a top-level token on a new line, after a finished one.
        if depth == 0
            && t.newline
            && !matches!(t.tok, Tok::Open('{'))
            && t.tok != Tok::Ident("else".into())
            && prev.is_none_or(|p| !continues(p))
        {
            statement_start = Some(t.start);
            first_body = None;
            if let Tok::Ident(name) = &t.tok {
                if !is_keyword(name) {
                    scan.defines.insert(name.clone());
                }
            }
        }

        // OPA: whitespace ends a term; a `(` or `[` on a new line starts a new expression.
        if let (Some(p), Tok::Open('(' | '[')) = (prev, &t.tok) {
            let in_body = stack.last().is_some_and(|&(c, body)| c == '{' && body);
            if t.newline && ends_term(p) && in_body {
                edits.push((p.end, p.end, ";".to_owned()));
            }
        }

        match &t.tok {
            Tok::Open(c) => {
                let body = *c == '{'
                    && prev.is_some_and(|p| {
                        ends_term(p) || matches!(&p.tok, Tok::Ident(s) if s == "if" || s == "else")
                    });
                if body && depth == 0 {
                    if last_closed_body_at_top
                        && v0
                        && prev.is_some_and(|p| p.tok == Tok::Close('}'))
                    {
                        // A chained body: repeat the head, so each body is its own rule.
                        if let (Some(s), Some(b)) = (statement_start, first_body) {
                            let head = src[s..b].split_whitespace().collect::<Vec<_>>().join(" ");
                            edits.push((t.start, t.start, format!("{head} ")));
                        }
                    } else if first_body.is_none() {
                        first_body = Some(t.start);
                    }
                }
                stack.push((*c, body));
            }
            Tok::Close(c) => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((open, body)) if open == want => {
                        last_closed_body_at_top = body && stack.is_empty();
                    }
                    _ => return Err(ScanError::Unbalanced(t.line)),
                }
                continue;
            }
            Tok::Ident(name) => {
                let after_dot = prev.is_some_and(|p| p.tok == Tok::Op(".") && !p.spaced);
                if name == "not" && !after_dot {
                    edits.extend(hoist_negated(src, &toks, idx, &mut hoisted)?);
                }
                if name == "namespaceObject" && after_dot {
                    scan.namespace_object.get_or_insert(t.line);
                }
                if !after_dot && !is_keyword(name) {
                    // The dotted chain starting here, and whether `(` follows it directly.
                    let mut dotted = name.clone();
                    let mut j = idx + 1;
                    while let (Some(dot), Some(next)) = (toks.get(j), toks.get(j + 1)) {
                        match (&dot.tok, &next.tok) {
                            (Tok::Op("."), Tok::Ident(s)) if !dot.spaced && !next.spaced => {
                                dotted.push('.');
                                dotted.push_str(s);
                                j += 2;
                            }
                            _ => break,
                        }
                    }
                    let called = toks
                        .get(j)
                        .is_some_and(|n| n.tok == Tok::Open('(') && !n.spaced);
                    let top_head = depth == 0 && Some(t.start) == statement_start;
                    if called && !top_head {
                        scan.calls.push((dotted, t.line));
                    }
                    if name == "data" {
                        let segment =
                            match (toks.get(idx + 1), toks.get(idx + 2), toks.get(idx + 3)) {
                                (Some(d), Some(n), _) if d.tok == Tok::Op(".") => match &n.tok {
                                    Tok::Ident(s) => s.clone(),
                                    _ => String::new(),
                                },
                                (Some(o), Some(n), Some(c))
                                    if o.tok == Tok::Open('[') && c.tok == Tok::Close(']') =>
                                {
                                    match &n.tok {
                                        Tok::Str(s) => s.clone(),
                                        _ => String::new(),
                                    }
                                }
                                _ => String::new(),
                            };
                        if segment != "lib" {
                            scan.data_refs.push((segment, t.line));
                        }
                    }
                }
            }
            Tok::Str(s)
                if s == "namespaceObject" && prev.is_some_and(|p| p.tok == Tok::Open('[')) =>
            {
                scan.namespace_object.get_or_insert(t.line);
            }
            _ => {}
        }
        if !matches!(t.tok, Tok::Close(_)) {
            last_closed_body_at_top = last_closed_body_at_top && matches!(t.tok, Tok::Open('{'));
        }
    }
    if let Some(t) = toks.last() {
        if !stack.is_empty() {
            return Err(ScanError::Unbalanced(t.line));
        }
    }

    let mut out = String::with_capacity(src.len() + 64);
    let mut at = 0;
    if let Some(to) = package_to {
        out.push_str(&src[..first.start]);
        out.push_str("package ");
        out.push_str(to);
        at = package_end;
    }
    edits.sort_by_key(|(start, _, _)| *start);
    for (start, end, text) in edits {
        if start < at {
            continue;
        }
        out.push_str(&src[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&src[at..]);
    scan.rewritten = out;
    Ok(scan)
}

const INFIX: &[&str] = &[
    "==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "&", "|",
];

/// Edits that bind the reference and call arguments of the negated call at `toks[not_at]` before
/// the `not`, as OPA's compiler does (its `rewriteDynamics` and `rewriteExprTerms` stages).
fn hoist_negated(
    src: &str,
    toks: &[Token],
    not_at: usize,
    counter: &mut usize,
) -> Result<Vec<(usize, usize, String)>, ScanError> {
    let not = &toks[not_at];
    // The expression: up to a `;`, a newline that does not continue it, or an enclosing close.
    let mut end = not_at + 1;
    let mut depth = 0usize;
    while let Some(t) = toks.get(end) {
        if depth == 0 {
            let continued = end > not_at + 1 && continues(&toks[end - 1]);
            if (t.newline && !continued) || t.tok == Tok::Op(";") {
                break;
            }
            if t.tok == Tok::Ident("with".into()) {
                return Err(ScanError::NotWith(t.line));
            }
        }
        match t.tok {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) if depth == 0 => break,
            Tok::Close(_) => depth -= 1,
            _ => {}
        }
        end += 1;
    }
    let expr = &toks[not_at + 1..end];
    // Operands of infix operators at depth 0 (a unary minus stays with its operand).
    let mut operands: Vec<&[Token]> = Vec::new();
    let (mut depth, mut from) = (0usize, 0usize);
    for (i, t) in expr.iter().enumerate() {
        match &t.tok {
            Tok::Open(_) => depth += 1,
            Tok::Close(_) => depth = depth.saturating_sub(1),
            Tok::Op(op) if depth == 0 && INFIX.contains(op) && i > from => {
                operands.push(&expr[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    let args: Vec<&[Token]> = if operands.is_empty() {
        // A call `f(a, b)`: its arguments, when the expression is exactly that call.
        let Some(open) = expr.iter().position(|t| t.tok == Tok::Open('(')) else {
            return Ok(Vec::new());
        };
        let is_call = expr[..open]
            .iter()
            .all(|t| matches!(&t.tok, Tok::Ident(_) | Tok::Op(".")))
            && open > 0
            && expr.last().is_some_and(|t| t.tok == Tok::Close(')'));
        if !is_call {
            return Ok(Vec::new());
        }
        let inner = &expr[open + 1..expr.len() - 1];
        let mut args = Vec::new();
        let (mut depth, mut from) = (0usize, 0usize);
        for (i, t) in inner.iter().enumerate() {
            match &t.tok {
                Tok::Open(_) => depth += 1,
                Tok::Close(_) => depth = depth.saturating_sub(1),
                Tok::Op(",") if depth == 0 => {
                    args.push(&inner[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        if from < inner.len() {
            args.push(&inner[from..]);
        }
        args
    } else {
        operands.push(&expr[from..]);
        operands
    };
    let mut edits = Vec::new();
    for arg in args {
        let (Some(first), Some(last)) = (arg.first(), arg.last()) else {
            continue;
        };
        // A reference or a call: `a.b`, `a[0]`, `f(x)`, or a root document alone.
        let dynamic = match &first.tok {
            Tok::Ident(name) => {
                !is_keyword(name)
                    && !matches!(name.as_str(), "true" | "false" | "null")
                    && (arg.len() > 1 || name == "input" || name == "data")
            }
            _ => false,
        };
        if !dynamic || arg.iter().any(|t| t.tok == Tok::Ident("not".into())) {
            continue;
        }
        let var = format!("__gatehouse_not_{counter}");
        *counter += 1;
        edits.push((
            not.start,
            not.start,
            format!("{var} := {}; ", &src[first.start..last.end]),
        ));
        edits.push((first.start, last.end, var));
    }
    Ok(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_is_renamed_and_read() {
        let s = scan(
            "# doc\npackage k8s.allowed # x\n\nv { true }\n",
            Some("template"),
            true,
        )
        .expect("scan");
        assert_eq!(s.package, "k8s.allowed");
        assert_eq!(s.rewritten, "# doc\npackage template # x\n\nv { true }\n");
        assert!(s.defines.contains("v"));
        assert_eq!(
            scan("v { true }", None, true).expect_err("no package"),
            ScanError::NoPackage(1)
        );
    }

    #[test]
    fn chained_bodies_become_rules_with_the_same_head() {
        let src = "package p\nviolation[{\"msg\": m}] {\n  a\n  m := 1\n} {\n  b\n  m := 2\n}\n";
        let s = scan(src, None, true).expect("scan");
        assert!(
            s.rewritten.contains("} violation[{\"msg\": m}] {\n  b"),
            "{}",
            s.rewritten
        );
        // An object value then a body is not a chain; `else` is not either.
        for plain in [
            "package p\nx = {\"a\": 1} { true }\n",
            "package p\nx = 1 { a } else = 2 { b }\n",
        ] {
            assert_eq!(scan(plain, None, true).expect("scan").rewritten, plain);
        }
    }

    #[test]
    fn a_parenthesis_starting_a_line_starts_an_expression() {
        let src = "package p\nv {\n  x := input.a\n  (x + 1) == 2\n  y := [1]\n  [z] := y\n}\n";
        let s = scan(src, None, true).expect("scan");
        assert!(
            s.rewritten.contains("x := input.a;\n  (x + 1)"),
            "{}",
            s.rewritten
        );
        assert!(s.rewritten.contains("y := [1];\n  [z]"), "{}", s.rewritten);
        // After an operator or inside a literal the next line continues the term.
        let cont = "package p\nv {\n  x := 1 +\n  (2)\n  y := f(\n  (3))\n  z := [\n  [1]]\n}\n";
        assert_eq!(scan(cont, None, true).expect("scan").rewritten, cont);
    }

    #[test]
    fn data_references_calls_and_namespace_object_are_found() {
        let src = r##"package p
import data.lib.helpers
import data.inventory
v[m] {
  helpers.ok(input.data)
  x := data["other"].y
  external_data({"provider": "p", "keys": []})
  time.now_ns() > 0
  "data.fake" != "#"
  input.review.namespaceObject.metadata
  m := sprintf("%v", [x])
}
f(x) = y { y := x }
"##;
        let s = scan(src, None, true).expect("scan");
        let refs: Vec<&str> = s.data_refs.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(refs, ["inventory", "other"]);
        let calls: Vec<&str> = s.calls.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            calls,
            ["helpers.ok", "external_data", "time.now_ns", "sprintf"]
        );
        assert_eq!(s.namespace_object, Some(10));
        assert!(s.defines.contains("v") && s.defines.contains("f"));
    }

    #[test]
    fn negated_calls_bind_their_arguments_first() {
        let src = "package p\nv {\n  not f(input.a, \"x\", y)\n  not input.b == 1\n  not g\n  not h(count(input.c))\n}\n";
        let s = scan(src, None, true).expect("scan");
        assert!(
            s.rewritten
                .contains("__gatehouse_not_0 := input.a; not f(__gatehouse_not_0, \"x\", y)"),
            "{}",
            s.rewritten
        );
        assert!(
            s.rewritten
                .contains("__gatehouse_not_1 := input.b; not __gatehouse_not_1 == 1"),
            "{}",
            s.rewritten
        );
        assert!(s.rewritten.contains("  not g\n"), "{}", s.rewritten);
        assert!(
            s.rewritten
                .contains("__gatehouse_not_2 := count(input.c); not h(__gatehouse_not_2)"),
            "{}",
            s.rewritten
        );
        assert_eq!(
            scan(
                "package p\nv { not f(input.a) with input as {} }",
                None,
                true
            )
            .expect_err("with"),
            ScanError::NotWith(2)
        );
    }

    #[test]
    fn strings_and_brackets_must_close() {
        assert_eq!(
            scan("package p\nv { x := \"a }\n", None, true).expect_err("string"),
            ScanError::Unterminated(2)
        );
        assert_eq!(
            scan("package p\nv { x := [1 }\n", None, true).expect_err("brackets"),
            ScanError::Unbalanced(2)
        );
    }
}
