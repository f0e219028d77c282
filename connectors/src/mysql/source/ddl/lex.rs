//! The DDL tokenizer: words, `quoted` identifiers, strings, numbers and punctuation, with
//! comments dropped and the contents of executable comments (`/*! … */`) kept, as the server
//! reads them.

use super::parse::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    /// A bare word: a keyword or an unquoted identifier.
    Word(String),
    /// A `backquoted` identifier.
    Ident(String),
    /// A 'string' or "string".
    Str(String),
    Number(String),
    Punct(char),
}

pub(super) fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') && chars.get(i + 2).is_none_or(|c| c.is_whitespace()) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            // `/*! … */` and `/*M! … */` are executed by the server: their contents count.
            '/' if next == Some('*')
                && (chars.get(i + 2) == Some(&'!')
                    || (chars.get(i + 2) == Some(&'M') && chars.get(i + 3) == Some(&'!'))) =>
            {
                i += if chars[i + 2] == 'M' { 4 } else { 3 };
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            // The end of an executable comment.
            '*' if next == Some('/') => i += 2,
            '`' => {
                let mut ident = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(ParseError("an unclosed `identifier`".into())),
                        Some('`') if chars.get(i + 1) == Some(&'`') => {
                            ident.push('`');
                            i += 2;
                        }
                        Some('`') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            ident.push(*c);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Ident(ident));
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(ParseError("an unclosed string".into())),
                        Some('\\') => {
                            let escaped = chars.get(i + 1).copied().unwrap_or('\\');
                            s.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                            i += 2;
                        }
                        Some(q) if *q == quote && chars.get(i + 1) == Some(&quote) => {
                            s.push(quote);
                            i += 2;
                        }
                        Some(q) if *q == quote => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(s));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            c => {
                tokens.push(Token::Punct(c));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

pub(super) fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => w.clone(),
        Token::Ident(i) => format!("`{i}`"),
        Token::Str(s) => format!("'{s}'"),
        Token::Number(n) => n.clone(),
        Token::Punct(c) => format!("'{c}'"),
    }
}
