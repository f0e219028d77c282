//! The `filter` transform's conditions: a small SQL-like language over a change's columns.
//!
//! ```text
//! status = 'paid' and amount >= 100
//! __op in ('c', 'u') and not (region is null or region = 'test')
//! before.status != after.status
//! ```
//!
//! - Names are columns of the row (the new row; the old one for deletes), `before.x` and
//!   `after.x` name one image, and `__op` (`c` `u` `d` `r`), `__table` (`schema.table`) and
//!   `__topic` describe the change. A name may be double-quoted (`"Order Total"`).
//! - Literals: `'text'` (`''` is a quote), numbers, `true`, `false`, `null`.
//! - Comparisons `= != <> < <= > >=`, `is [not] null`, `[not] in (…)`, joined by `and`, `or`,
//!   `not` and parentheses, in SQL's precedence.
//! - As in SQL, a comparison with a null is false (`is null` asks for one). Numbers compare as
//!   numbers, everything else by its text (dates and timestamps in ISO form, so
//!   `created >= '2024-01-01'` works). A number compared with a text column that does not
//!   hold a number is an error of that event, which goes to the dead-letter topic.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::event::{DataType, Op, TableSchema};
use crate::value::Value;

use super::values::{number, text_form};

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, CmpOp, Operand),
    IsNull(Operand, bool),
    In(Operand, Vec<Literal>, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Name(Name),
    Literal(Literal),
}

/// A name as written: which image, and the column or change attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub image: Image,
    pub column: String,
    /// The column's index in the table the condition is bound to (see [`Expr::bind`]).
    pub index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// The new row, or the old one for deletes.
    Row,
    Before,
    After,
    /// `__op`, `__table`, `__topic`.
    Meta,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

const META: [&str; 3] = ["__op", "__table", "__topic"];

/// Parses `text`; the error says where and what was expected.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!(
            "unexpected {} after a whole condition",
            token.describe()
        )),
    }
}

impl Expr {
    /// The columns the condition names (not `__op` and friends).
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |name| {
            if name.image != Image::Meta {
                out.push(name.column.as_str());
            }
        });
        out
    }

    fn visit_mut(&mut self, f: &mut impl FnMut(&mut Name)) {
        let operand = |o: &mut Operand, f: &mut dyn FnMut(&mut Name)| {
            if let Operand::Name(name) = o {
                f(name);
            }
        };
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit_mut(f);
                b.visit_mut(f);
            }
            Expr::Not(e) => e.visit_mut(f),
            Expr::Compare(a, _, b) => {
                operand(a, f);
                operand(b, f);
            }
            Expr::IsNull(o, _) | Expr::In(o, _, _) => operand(o, f),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Name)) {
        let operand = |o: &'a Operand, f: &mut dyn FnMut(&'a Name)| {
            if let Operand::Name(name) = o {
                f(name);
            }
        };
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Not(e) => e.visit(f),
            Expr::Compare(a, _, b) => {
                operand(a, f);
                operand(b, f);
            }
            Expr::IsNull(o, _) | Expr::In(o, _, _) => operand(o, f),
        }
    }

    /// Resolves column names against `table`: the expression with each name as its column's
    /// index, or the first name the table lacks.
    pub fn bind(&self, table: &TableSchema) -> Result<Bound, String> {
        let mut missing = None;
        self.visit(&mut |name| {
            if name.image != Image::Meta
                && missing.is_none()
                && !table.columns.iter().any(|c| c.name == name.column)
            {
                missing = Some(name.column.clone());
            }
        });
        if let Some(column) = missing {
            return Err(column);
        }
        let mut expr = self.clone();
        let mut uses_table = false;
        expr.visit_mut(&mut |name| {
            uses_table |= name.image == Image::Meta && name.column == "__table";
            if let Some(i) = table.columns.iter().position(|c| c.name == name.column) {
                name.index = i;
            }
        });
        Ok(Bound {
            expr,
            types: table.columns.iter().map(|c| c.data_type.clone()).collect(),
            uses_table,
        })
    }
}

/// A condition bound to one table version.
#[derive(Debug, Clone)]
pub struct Bound {
    expr: Expr,
    types: Vec<DataType>,
    uses_table: bool,
}

/// What a condition is evaluated on.
pub struct Subject<'a> {
    pub op: Op,
    pub before: Option<&'a [Value]>,
    pub after: Option<&'a [Value]>,
    /// `schema.table` (only read when [`Bound::uses_table`]).
    pub table: &'a str,
    pub topic: &'a str,
}

/// A value met while evaluating: borrowed from the row, or made.
enum Val<'a> {
    Null,
    Row(&'a Value, &'a DataType),
    Lit(&'a Literal),
    Str(&'a str),
}

impl Bound {
    /// Whether the condition reads `__table` (which costs the subject a string).
    pub fn uses_table(&self) -> bool {
        self.uses_table
    }

    /// Whether the change satisfies the condition; an error names what could not be compared.
    pub fn eval(&self, subject: &Subject<'_>) -> Result<bool, String> {
        self.expr_eval(&self.expr, subject)
    }

    fn expr_eval(&self, expr: &Expr, s: &Subject<'_>) -> Result<bool, String> {
        Ok(match expr {
            Expr::And(a, b) => self.expr_eval(a, s)? && self.expr_eval(b, s)?,
            Expr::Or(a, b) => self.expr_eval(a, s)? || self.expr_eval(b, s)?,
            Expr::Not(e) => !self.expr_eval(e, s)?,
            Expr::IsNull(o, negated) => matches!(self.value(o, s), Val::Null) != *negated,
            Expr::Compare(a, op, b) => match compare(&self.value(a, s), &self.value(b, s), a, b)? {
                None => false,
                Some(order) => match op {
                    CmpOp::Eq => order == Ordering::Equal,
                    CmpOp::Ne => order != Ordering::Equal,
                    CmpOp::Lt => order == Ordering::Less,
                    CmpOp::Le => order != Ordering::Greater,
                    CmpOp::Gt => order == Ordering::Greater,
                    CmpOp::Ge => order != Ordering::Less,
                },
            },
            Expr::In(o, list, negated) => {
                let value = self.value(o, s);
                if matches!(value, Val::Null) {
                    return Ok(false);
                }
                let mut found = false;
                for literal in list {
                    let operand = Operand::Literal(literal.clone());
                    if compare(&value, &Val::Lit(literal), o, &operand)? == Some(Ordering::Equal) {
                        found = true;
                        break;
                    }
                }
                found != *negated
            }
        })
    }

    fn value<'a>(&'a self, operand: &'a Operand, s: &Subject<'a>) -> Val<'a> {
        let name = match operand {
            Operand::Literal(Literal::Null) => return Val::Null,
            Operand::Literal(literal) => return Val::Lit(literal),
            Operand::Name(name) => name,
        };
        if name.image == Image::Meta {
            return Val::Str(match name.column.as_str() {
                "__op" => s.op.code(),
                "__table" => s.table,
                _ => s.topic,
            });
        }
        let row = match name.image {
            Image::Before => s.before,
            Image::After => s.after,
            _ if s.op == Op::Delete => s.before,
            _ => s.after.or(s.before),
        };
        match row.and_then(|row| row.get(name.index)) {
            None | Some(Value::Null | Value::Unavailable) => Val::Null,
            Some(value) => Val::Row(value, &self.types[name.index]),
        }
    }
}

/// How two values order; None when either is null.
fn compare(
    a: &Val<'_>,
    b: &Val<'_>,
    left: &Operand,
    right: &Operand,
) -> Result<Option<Ordering>, String> {
    if matches!(a, Val::Null) || matches!(b, Val::Null) {
        return Ok(None);
    }
    let numeric = |v: &Val<'_>| match v {
        Val::Lit(Literal::Number(_)) => true,
        Val::Row(_, t) => is_numeric(t),
        _ => false,
    };
    if numeric(a) || numeric(b) {
        let (x, y) = (as_number(a, left)?, as_number(b, right)?);
        return Ok(x.partial_cmp(&y));
    }
    Ok(Some(as_text(a).cmp(&as_text(b))))
}

fn is_numeric(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal { .. }
    )
}

fn as_number(v: &Val<'_>, operand: &Operand) -> Result<f64, String> {
    let parsed = match v {
        Val::Lit(Literal::Number(n)) => Some(*n),
        Val::Row(value, _) => number(value),
        Val::Lit(Literal::Text(t)) => t.trim().parse().ok(),
        Val::Str(t) => t.parse().ok(),
        Val::Lit(Literal::Bool(_) | Literal::Null) | Val::Null => None,
    };
    parsed.ok_or_else(|| {
        format!(
            "{} is {}, which is not a number to compare with a number",
            describe(operand),
            match v {
                Val::Row(value, _) => format!("{:?}", text_form(value).unwrap_or_default()),
                Val::Lit(Literal::Bool(b)) => b.to_string(),
                Val::Str(t) => format!("{t:?}"),
                Val::Lit(Literal::Text(t)) => format!("{t:?}"),
                _ => "null".to_owned(),
            }
        )
    })
}

fn as_text<'a>(v: &'a Val<'_>) -> Cow<'a, str> {
    match v {
        Val::Row(Value::Text(t), _) => Cow::Borrowed(t.as_str()),
        Val::Row(Value::Enum(t), _) => Cow::Borrowed(t.as_str()),
        Val::Row(value, _) => Cow::Owned(text_form(value).unwrap_or_default()),
        Val::Lit(Literal::Text(t)) => Cow::Borrowed(t.as_str()),
        Val::Lit(Literal::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Val::Lit(Literal::Number(n)) => Cow::Owned(n.to_string()),
        Val::Str(t) => Cow::Borrowed(t),
        Val::Lit(Literal::Null) | Val::Null => Cow::Borrowed(""),
    }
}

fn describe(operand: &Operand) -> String {
    match operand {
        Operand::Name(name) => match name.image {
            Image::Before => format!("before.{}", name.column),
            Image::After => format!("after.{}", name.column),
            _ => name.column.clone(),
        },
        Operand::Literal(l) => format!("{l:?}"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Text(String),
    Number(f64),
    Op(CmpOp),
    Open,
    Close,
    Comma,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Name(n) => format!("`{n}`"),
            Token::Text(t) => format!("'{t}'"),
            Token::Number(n) => format!("{n}"),
            Token::Op(op) => format!("{op:?}"),
            Token::Open => "`(`".to_owned(),
            Token::Close => "`)`".to_owned(),
            Token::Comma => "`,`".to_owned(),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self, Token::Name(n) if n.eq_ignore_ascii_case(word))
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => (tokens.push(Token::Open), i += 1).1,
            ')' => (tokens.push(Token::Close), i += 1).1,
            ',' => (tokens.push(Token::Comma), i += 1).1,
            '=' => (tokens.push(Token::Op(CmpOp::Eq)), i += 1).1,
            '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('!', Some('=')) => (CmpOp::Ne, 2),
                    ('<', Some('>')) => (CmpOp::Ne, 2),
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    ('>', _) => (CmpOp::Gt, 1),
                    _ => return Err(format!("`!` at character {} must be `!=`", i + 1)),
                };
                tokens.push(Token::Op(op));
                i += len;
            }
            '\'' | '"' => {
                let mut out = String::new();
                let start = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(format!(
                                "the quote at character {} is never closed",
                                start + 1
                            ))
                        }
                        Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                            out.push(c);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            out.push(other);
                            i += 1;
                        }
                    }
                }
                tokens.push(if c == '\'' {
                    Token::Text(out)
                } else {
                    Token::Name(format!("\"{out}"))
                });
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | 'e' | 'E'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let n = word
                    .parse()
                    .map_err(|_| format!("{word:?} is not a number"))?;
                tokens.push(Token::Number(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '$'))
                {
                    i += 1;
                }
                tokens.push(Token::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} at character {}", i + 1)),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.keyword(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            return match self.next() {
                Some(Token::Close) => Ok(inner),
                other => Err(expected("`)`", other.as_ref())),
            };
        }
        let left = self.operand()?;
        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            if !self.eat_keyword("null") {
                return Err(expected("`null` after `is`", self.peek()));
            }
            return Ok(Expr::IsNull(left, negated));
        }
        let negated = self.eat_keyword("not");
        if self.eat_keyword("in") {
            if self.next() != Some(Token::Open) {
                return Err("`in` takes a list in parentheses: in ('a', 'b')".to_owned());
            }
            let mut list = Vec::new();
            loop {
                match self.operand()? {
                    Operand::Literal(l) => list.push(l),
                    Operand::Name(n) => {
                        return Err(format!(
                            "`in` lists hold literals, not the name `{}`",
                            n.column
                        ))
                    }
                }
                match self.next() {
                    Some(Token::Comma) => continue,
                    Some(Token::Close) => break,
                    other => return Err(expected("`,` or `)` in the `in` list", other.as_ref())),
                }
            }
            return Ok(Expr::In(left, list, negated));
        }
        if negated {
            return Err(expected("`in` after `not`", self.peek()));
        }
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            other => {
                return Err(expected(
                    "a comparison (=, !=, <, <=, >, >=, is null, in)",
                    other.as_ref(),
                ))
            }
        };
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Token::Text(t)) => Ok(Operand::Literal(Literal::Text(t))),
            Some(Token::Number(n)) => Ok(Operand::Literal(Literal::Number(n))),
            Some(t) if t.keyword("true") => Ok(Operand::Literal(Literal::Bool(true))),
            Some(t) if t.keyword("false") => Ok(Operand::Literal(Literal::Bool(false))),
            Some(t) if t.keyword("null") => Ok(Operand::Literal(Literal::Null)),
            Some(Token::Name(n)) => Ok(Operand::Name(name(&n)?)),
            other => Err(expected("a column name or a value", other.as_ref())),
        }
    }
}

fn name(word: &str) -> Result<Name, String> {
    if let Some(quoted) = word.strip_prefix('"') {
        return Ok(Name {
            image: Image::Row,
            column: quoted.to_owned(),
            index: usize::MAX,
        });
    }
    if META.contains(&word) {
        return Ok(Name {
            image: Image::Meta,
            column: word.to_owned(),
            index: usize::MAX,
        });
    }
    if word.starts_with("__") {
        return Err(format!(
            "`{word}` is not a name filters know: use a column, or one of {}",
            META.join(", ")
        ));
    }
    let (image, column) = match word.split_once('.') {
        Some(("before", column)) => (Image::Before, column),
        Some(("after", column)) => (Image::After, column),
        _ => (Image::Row, word),
    };
    Ok(Name {
        image,
        column: column.to_owned(),
        index: usize::MAX,
    })
}

fn expected(what: &str, found: Option<&Token>) -> String {
    match found {
        Some(token) => format!("expected {what}, found {}", token.describe()),
        None => format!("expected {what}, found the end of the condition"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, TableId};

    fn table() -> TableSchema {
        let column = |name: &str, data_type: DataType, key: bool| Column {
            name: name.to_owned(),
            type_name: String::new(),
            data_type,
            key,
            nullable: !key,
        };
        TableSchema {
            table: TableId {
                namespace: "public".into(),
                name: "orders".into(),
            },
            columns: vec![
                column("id", DataType::Int64, true),
                column("status", DataType::Text, false),
                column(
                    "amount",
                    DataType::Decimal {
                        precision: Some(10),
                        scale: Some(2),
                    },
                    false,
                ),
                column("code", DataType::Text, false),
            ],
            version: 1,
        }
    }

    fn row(id: i64, status: Option<&str>, amount: &str, code: &str) -> Vec<Value> {
        vec![
            Value::Int64(id),
            status.map_or(Value::Null, |s| Value::Text(s.into())),
            Value::Decimal(crate::value::Decimal::parse(amount).unwrap()),
            Value::Text(code.into()),
        ]
    }

    fn eval(
        condition: &str,
        op: Op,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
    ) -> Result<bool, String> {
        let bound = parse(condition)?
            .bind(&table())
            .map_err(|c| format!("no column {c}"))?;
        bound.eval(&Subject {
            op,
            before,
            after,
            table: "public.orders",
            topic: "shop.public.orders",
        })
    }

    #[test]
    fn conditions_follow_sql() {
        let paid = row(1, Some("paid"), "120.50", "7");
        let open = row(2, None, "5", "x");
        let yes = |c: &str, r: &[Value]| eval(c, Op::Create, None, Some(r)).unwrap();
        assert!(yes("status = 'paid' and amount >= 100", &paid));
        assert!(!yes("status = 'paid' and amount >= 100", &open));
        assert!(yes("status is null", &open));
        assert!(
            !yes("status != 'paid'", &open),
            "a comparison with null is false"
        );
        assert!(yes("not (status is null or id = 1) or amount < 10", &open));
        assert!(yes(
            "__op in ('c', 'u') and __table = 'public.orders'",
            &paid
        ));
        assert!(yes(
            "__topic = 'shop.public.orders' and id not in (2, 3)",
            &paid
        ));
        assert!(
            yes("code = 7", &paid),
            "a number against a text holding one"
        );
        assert!(yes(
            "\"status\" <> 'open' and amount > 120.49 and amount <= 120.5",
            &paid
        ));
        let old = row(1, Some("open"), "120.50", "7");
        assert!(eval(
            "before.status != after.status",
            Op::Update,
            Some(&old),
            Some(&paid)
        )
        .unwrap());
        assert!(eval(
            "status = 'open' and __op = 'd'",
            Op::Delete,
            Some(&old),
            None
        )
        .unwrap());
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse("status = ").unwrap_err(),
            "expected a column name or a value, found the end of the condition"
        );
        assert!(parse("status = 'x").unwrap_err().contains("never closed"));
        assert!(parse("(a = 1").unwrap_err().contains("expected `)`"));
        assert!(parse("a = 1 b").unwrap_err().contains("unexpected `b`"));
        assert!(parse("__source = 1")
            .unwrap_err()
            .contains("not a name filters know"));
        assert_eq!(
            parse("missing = 1 and id = 2")
                .unwrap()
                .bind(&table())
                .unwrap_err(),
            "missing"
        );
        let err = eval(
            "code > 3",
            Op::Create,
            None,
            Some(&row(1, None, "1", "abc")),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "code is \"abc\", which is not a number to compare with a number"
        );
    }
}
