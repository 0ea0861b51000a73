//! Tokens and the parse tree of a query.

use crate::value::Value;
use crate::{fault, Fault};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Long(i64),
    Real(f64),
    Span(i64),
    Sym(&'static str),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

const SYMBOLS: [&str; 21] = [
    "==", "!=", "=~", "!~", "<=", ">=", "|", ",", "(", ")", "[", "]", ".", "<", ">", "=", "+", "-",
    "*", "/", "%",
];

fn span_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "d" | "day" | "days" => 86_400_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "m" | "min" | "minute" | "minutes" => 60_000.0,
        "s" | "sec" | "second" | "seconds" => 1000.0,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        _ => return None,
    })
}

fn lex(text: &str) -> Result<Vec<Token>, Fault> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' {
            let start = i;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&b) = bytes.get(i) else {
                    return Err(fault(start, "unterminated string literal"));
                };
                if b == c {
                    i += 1;
                    break;
                }
                if b == b'\\' {
                    let escaped = *bytes
                        .get(i + 1)
                        .ok_or_else(|| fault(start, "unterminated string literal"))?;
                    s.push(match escaped {
                        b'n' => '\n',
                        b't' => '\t',
                        other => other as char,
                    });
                    i += 2;
                    continue;
                }
                let ch = text[i..].chars().next().expect("in bounds");
                s.push(ch);
                i += ch.len_utf8();
            }
            out.push(Token {
                tok: Tok::Str(s),
                pos: start,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let number = &text[start..i];
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &text[unit_start..i];
            let bad = || {
                fault(
                    start,
                    format!("'{}' is not a number or timespan", &text[start..i]),
                )
            };
            let tok = if unit.is_empty() {
                match number.parse::<i64>() {
                    Ok(n) => Tok::Long(n),
                    Err(_) => Tok::Real(number.parse().map_err(|_| bad())?),
                }
            } else {
                let scale = span_unit(unit).ok_or_else(bad)?;
                let n: f64 = number.parse().map_err(|_| bad())?;
                Tok::Span((n * scale).round() as i64)
            };
            out.push(Token { tok, pos: start });
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let start = i;
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
            {
                // `project-away` and friends; a minus between names needs spaces.
                if bytes[i] == b'-' && !text[start..i].starts_with("project") {
                    break;
                }
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(text[start..i].to_owned()),
                pos: start,
            });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            out.push(Token {
                tok: Tok::Sym(sym),
                pos: i,
            });
            i += sym.len();
        } else if c == b'!' {
            out.push(Token {
                tok: Tok::Sym("!"),
                pos: i,
            });
            i += 1;
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            return Err(fault(i, format!("unexpected character '{ch}'")));
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(out)
}

/// A scalar expression and where it starts in the text.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub pos: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum ExprKind {
    Literal(Value),
    Column(String),
    /// `*` as an argument (`arg_max(x, *)`).
    Star,
    /// `name = expression` as an argument, naming the column it becomes
    /// (`arg_max(lastCall = TimeGenerated, OperationName)`).
    Named(String, Box<Expr>),
    Call(String, Vec<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Index(Box<Expr>, Box<Expr>),
    In {
        value: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    EqCi,
    NeCi,
    Lt,
    Le,
    Gt,
    Ge,
    /// A string operator (`contains`, `startswith`, …), maybe negated.
    Text(TextOp, bool),
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
    Has,
}

/// `name = expr`, or an expression whose name is derived.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub name: Option<String>,
    pub expr: Expr,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Table(String, usize),
    Union(Vec<Query>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    Inner,
    InnerUnique,
    LeftOuter,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Where(Expr),
    Extend(Vec<Named>),
    Project(Vec<Named>),
    ProjectAway(Vec<(String, usize)>),
    Summarize {
        aggregates: Vec<Named>,
        by: Vec<Named>,
    },
    Distinct(Vec<Named>),
    Order(Vec<(Expr, bool)>),
    Take(usize),
    Count,
    Join {
        kind: JoinKind,
        right: Box<Query>,
        on: Vec<(String, String, usize)>,
    },
    Union(Vec<Query>),
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub source: Source,
    pub ops: Vec<Op>,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// Parses a whole query.
pub(crate) fn parse(text: &str) -> Result<Query, Fault> {
    let mut p = Parser {
        tokens: lex(text)?,
        at: 0,
    };
    let q = p.query()?;
    if p.peek() != &Tok::End {
        return Err(p.unexpected("'|' or the end of the query"));
    }
    Ok(q)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.at + n).min(self.tokens.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.tokens[self.at].pos
    }

    fn next(&mut self) -> Token {
        let t = self.tokens[self.at].clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn unexpected(&self, wanted: &str) -> Fault {
        let found = match self.peek() {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Str(s) => format!("the string \"{s}\""),
            Tok::Long(n) => format!("'{n}'"),
            Tok::Real(r) => format!("'{r}'"),
            Tok::Span(_) => "a timespan".to_owned(),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::End => "the end of the query".to_owned(),
        };
        fault(self.pos(), format!("expected {wanted}, found {found}"))
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let hit = self.is_word(word);
        if hit {
            self.next();
        }
        hit
    }

    fn eat(&mut self, sym: &str) -> bool {
        let hit = matches!(self.peek(), Tok::Sym(s) if *s == sym);
        if hit {
            self.next();
        }
        hit
    }

    fn expect(&mut self, sym: &str) -> Result<(), Fault> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{sym}'")))
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, usize), Fault> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                let pos = self.pos();
                self.next();
                Ok((s, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn query(&mut self) -> Result<Query, Fault> {
        let source = if self.eat_word("union") {
            Source::Union(self.union_args()?)
        } else if self.peek() == &Tok::Sym("(") {
            self.next();
            let q = self.query()?;
            self.expect(")")?;
            Source::Union(vec![q])
        } else {
            let (name, pos) = self.ident("a table name")?;
            Source::Table(name, pos)
        };
        let mut ops = Vec::new();
        while self.eat("|") {
            ops.push(self.operator()?);
        }
        Ok(Query { source, ops })
    }

    fn union_args(&mut self) -> Result<Vec<Query>, Fault> {
        let mut parts = Vec::new();
        loop {
            if self.eat("(") {
                parts.push(self.query()?);
                self.expect(")")?;
            } else {
                let (name, pos) = self.ident("a table name or '(' after union")?;
                parts.push(Query {
                    source: Source::Table(name, pos),
                    ops: Vec::new(),
                });
            }
            if !self.eat(",") {
                return Ok(parts);
            }
        }
    }

    fn operator(&mut self) -> Result<Op, Fault> {
        let (word, pos) = self.ident("a tabular operator")?;
        Ok(match word.as_str() {
            "where" | "filter" => Op::Where(self.expr()?),
            "extend" => Op::Extend(self.named_list(true)?),
            "project" => Op::Project(self.named_list(false)?),
            "project-away" => {
                let mut cols = vec![self.ident("a column name")?];
                while self.eat(",") {
                    cols.push(self.ident("a column name")?);
                }
                Op::ProjectAway(cols)
            }
            "summarize" => {
                let aggregates = if self.is_word("by") {
                    Vec::new()
                } else {
                    self.named_list(false)?
                };
                let by = if self.eat_word("by") {
                    self.named_list(false)?
                } else {
                    Vec::new()
                };
                if aggregates.is_empty() && by.is_empty() {
                    return Err(fault(pos, "summarize needs an aggregate or a 'by' clause"));
                }
                Op::Summarize { aggregates, by }
            }
            "distinct" => Op::Distinct(self.named_list(false)?),
            "order" | "sort" => {
                if !self.eat_word("by") {
                    return Err(self.unexpected("'by'"));
                }
                let mut keys = Vec::new();
                loop {
                    let e = self.expr()?;
                    let desc = if self.eat_word("asc") {
                        false
                    } else {
                        self.eat_word("desc");
                        true
                    };
                    keys.push((e, desc));
                    if !self.eat(",") {
                        break;
                    }
                }
                Op::Order(keys)
            }
            "take" | "limit" => match self.next().tok {
                Tok::Long(n) if n >= 0 => Op::Take(n as usize),
                _ => return Err(fault(pos, format!("{word} needs a non-negative row count"))),
            },
            "count" => Op::Count,
            "join" => self.join()?,
            "union" => Op::Union(self.union_args()?),
            other => return Err(fault(pos, format!("unknown tabular operator '{other}'"))),
        })
    }

    fn join(&mut self) -> Result<Op, Fault> {
        let mut kind = JoinKind::InnerUnique;
        if self.eat_word("kind") {
            self.expect("=")?;
            let (k, pos) = self.ident("a join kind")?;
            kind = match k.as_str() {
                "inner" => JoinKind::Inner,
                "innerunique" => JoinKind::InnerUnique,
                "leftouter" => JoinKind::LeftOuter,
                other => {
                    return Err(fault(
                        pos,
                        format!(
                        "join kind '{other}' is not supported; use inner, innerunique or leftouter"
                    ),
                    ))
                }
            };
        }
        self.expect("(")?;
        let right = self.query()?;
        self.expect(")")?;
        if !self.eat_word("on") {
            return Err(self.unexpected("'on'"));
        }
        let mut on = Vec::new();
        loop {
            let pos = self.pos();
            let side = |p: &mut Parser, which: &str| -> Result<String, Fault> {
                if !p.eat_word(which) {
                    return Err(p.unexpected(&format!("'{which}'")));
                }
                p.expect(".")?;
                Ok(p.ident("a column name")?.0)
            };
            if self.is_word("$left") {
                let left = side(self, "$left")?;
                self.expect("==")?;
                let right = side(self, "$right")?;
                on.push((left, right, pos));
            } else {
                let (col, _) = self.ident("a column name or $left.column")?;
                on.push((col.clone(), col, pos));
            }
            if !self.eat(",") {
                break;
            }
        }
        Ok(Op::Join {
            kind,
            right: Box::new(right),
            on,
        })
    }

    /// `a = expr, expr, …`; with `require_names`, every item must be named.
    fn named_list(&mut self, require_names: bool) -> Result<Vec<Named>, Fault> {
        let mut items = Vec::new();
        loop {
            let named = matches!(self.peek(), Tok::Ident(_)) && self.peek_at(1) == &Tok::Sym("=");
            let name = if named {
                let (n, _) = self.ident("a column name")?;
                self.next();
                Some(n)
            } else if require_names {
                return Err(self.unexpected("'name = expression'"));
            } else {
                None
            };
            items.push(Named {
                name,
                expr: self.expr()?,
            });
            if !self.eat(",") {
                return Ok(items);
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, Fault> {
        let mut left = self.and()?;
        while self.is_word("or") {
            let pos = self.pos();
            self.next();
            let right = self.and()?;
            left = binary(BinOp::Or, left, right, pos);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Fault> {
        let mut left = self.comparison()?;
        while self.is_word("and") {
            let pos = self.pos();
            self.next();
            let right = self.comparison()?;
            left = binary(BinOp::And, left, right, pos);
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, Fault> {
        let left = self.additive()?;
        let pos = self.pos();
        let negated = self.peek() == &Tok::Sym("!") && matches!(self.peek_at(1), Tok::Ident(_));
        let word = match (negated, self.peek(), self.peek_at(1)) {
            (true, _, Tok::Ident(w)) | (false, Tok::Ident(w), _) => Some(w.clone()),
            _ => None,
        };
        let text_op = word.as_deref().and_then(|w| {
            Some(match w {
                "contains" => TextOp::Contains,
                "startswith" => TextOp::StartsWith,
                "endswith" => TextOp::EndsWith,
                "has" => TextOp::Has,
                _ => return None,
            })
        });
        if let Some(op) = text_op {
            if negated {
                self.next();
            }
            self.next();
            let right = self.additive()?;
            return Ok(binary(BinOp::Text(op, negated), left, right, pos));
        }
        if word.as_deref() == Some("in") {
            if negated {
                self.next();
            }
            self.next();
            self.expect("(")?;
            let mut list = vec![self.expr()?];
            while self.eat(",") {
                list.push(self.expr()?);
            }
            self.expect(")")?;
            return Ok(Expr {
                kind: ExprKind::In {
                    value: Box::new(left),
                    list,
                    negated,
                },
                pos,
            });
        }
        let op = match self.peek() {
            Tok::Sym("==") => BinOp::Eq,
            Tok::Sym("!=") => BinOp::Ne,
            Tok::Sym("=~") => BinOp::EqCi,
            Tok::Sym("!~") => BinOp::NeCi,
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            _ => return Ok(left),
        };
        self.next();
        let right = self.additive()?;
        Ok(binary(op, left, right, pos))
    }

    fn additive(&mut self) -> Result<Expr, Fault> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.next();
            let right = self.multiplicative()?;
            left = binary(op, left, right, pos);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, Fault> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Rem,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.next();
            let right = self.unary()?;
            left = binary(op, left, right, pos);
        }
    }

    fn unary(&mut self) -> Result<Expr, Fault> {
        let pos = self.pos();
        if self.eat("-") {
            let inner = self.unary()?;
            return Ok(Expr {
                kind: ExprKind::Negate(Box::new(inner)),
                pos,
            });
        }
        let mut e = self.primary()?;
        while self.peek() == &Tok::Sym("[") {
            let pos = self.pos();
            self.next();
            let index = self.expr()?;
            self.expect("]")?;
            e = Expr {
                kind: ExprKind::Index(Box::new(e), Box::new(index)),
                pos,
            };
        }
        Ok(e)
    }

    /// A function argument: an expression, or `name = expression`.
    fn argument(&mut self) -> Result<Expr, Fault> {
        let pos = self.pos();
        if matches!(self.peek(), Tok::Ident(_)) && self.peek_at(1) == &Tok::Sym("=") {
            let (name, _) = self.ident("an argument name")?;
            self.next();
            let value = self.expr()?;
            return Ok(Expr {
                kind: ExprKind::Named(name, Box::new(value)),
                pos,
            });
        }
        self.expr()
    }

    fn primary(&mut self) -> Result<Expr, Fault> {
        let pos = self.pos();
        let literal = |v| Expr {
            kind: ExprKind::Literal(v),
            pos,
        };
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(literal(Value::String(s)))
            }
            Tok::Long(n) => {
                self.next();
                Ok(literal(Value::Long(n)))
            }
            Tok::Real(r) => {
                self.next();
                Ok(literal(Value::Real(r)))
            }
            Tok::Span(ms) => {
                self.next();
                Ok(literal(Value::TimeSpan(ms)))
            }
            Tok::Sym("(") => {
                self.next();
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("*") => {
                self.next();
                Ok(Expr {
                    kind: ExprKind::Star,
                    pos,
                })
            }
            Tok::Ident(name) => {
                self.next();
                match name.as_str() {
                    "true" => return Ok(literal(Value::Bool(true))),
                    "false" => return Ok(literal(Value::Bool(false))),
                    _ => {}
                }
                if !self.eat("(") {
                    return Ok(Expr {
                        kind: ExprKind::Column(name),
                        pos,
                    });
                }
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.argument()?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect(")")?;
                }
                Ok(Expr {
                    kind: ExprKind::Call(name, args),
                    pos,
                })
            }
            _ => Err(self.unexpected("an expression")),
        }
    }
}

fn binary(op: BinOp, left: Expr, right: Expr, pos: usize) -> Expr {
    Expr {
        kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
        pos,
    }
}
