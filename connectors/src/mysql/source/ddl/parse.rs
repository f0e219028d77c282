//! A parser for the DDL statements that change a table's columns: CREATE TABLE, ALTER TABLE,
//! DROP TABLE, RENAME TABLE and TRUNCATE, as MySQL and MariaDB write them into QUERY events.
//!
//! It reads what decides how rows decode (column names, order and types, charsets, the
//! primary key, nullability) and passes over what does not (defaults, comments, indexes,
//! engine and other table options). Anything else inside a statement it recognises is an
//! error, so that a table is never silently given the wrong shape.

use std::fmt;

use super::lex::{describe, lex, Token};

/// `db.table`, with the database left out when the statement did not name one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub database: Option<String>,
    pub table: String,
}

/// A column as a definition spells it, in the terms of information_schema.COLUMNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnDef {
    pub name: String,
    /// The base type in lower case: `int`, `varchar`, `decimal`, `enum`, …
    pub data_type: String,
    /// The whole type: `int unsigned`, `varchar(20)`, `decimal(12,2)`, `enum('a','b')`.
    pub column_type: String,
    /// `NOT NULL` (or `PRIMARY KEY`) makes it false.
    pub nullable: bool,
    /// Declared `PRIMARY KEY` in the column itself.
    pub primary_key: bool,
    /// `CHARACTER SET` of the column, when given (or implied by the type, as for `nchar`).
    pub charset: Option<String>,
}

/// Where ADD, MODIFY and CHANGE put a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// Where it is (MODIFY, CHANGE), or last (ADD).
    Default,
    First,
    After(String),
}

/// One clause of an ALTER TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AlterSpec {
    AddColumn(ColumnDef, Place),
    DropColumn(String),
    /// MODIFY (old name = new name) and CHANGE.
    ChangeColumn {
        old: String,
        column: ColumnDef,
        place: Place,
    },
    RenameColumn {
        from: String,
        to: String,
    },
    AddPrimaryKey(Vec<String>),
    DropPrimaryKey,
    RenameTable(Name),
    /// `CONVERT TO CHARACTER SET x`: every text column and the table default.
    ConvertCharset(String),
    /// `[DEFAULT] CHARACTER SET x`: the default for columns added later.
    DefaultCharset(String),
}

/// What CREATE TABLE makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CreateBody {
    Columns {
        columns: Vec<ColumnDef>,
        primary_key: Vec<String>,
        charset: Option<String>,
    },
    /// `CREATE TABLE a LIKE b`.
    Like(Name),
    /// `CREATE TABLE … AS SELECT` or `… SELECT`: the columns come from a query.
    Query,
}

/// A table DDL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ddl {
    Create {
        table: Name,
        body: CreateBody,
        /// `CREATE OR REPLACE TABLE` (MariaDB): it replaces a table that exists.
        or_replace: bool,
    },
    Alter {
        table: Name,
        specs: Vec<AlterSpec>,
    },
    Drop {
        tables: Vec<Name>,
    },
    Rename {
        pairs: Vec<(Name, Name)>,
    },
    Truncate {
        table: Name,
    },
}

/// Why a statement could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a statement. `Ok(None)` for statements that are not table DDL (GRANT, CREATE
/// INDEX, CREATE VIEW, …); an error for table DDL this parser does not understand.
pub(crate) fn parse(statement: &str) -> Result<Option<Ddl>, ParseError> {
    let tokens = lex(statement)?;
    let mut p = Parser { tokens, at: 0 };
    p.statement()
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn is_word_at(&self, ahead: usize, word: &str) -> bool {
        matches!(self.peek_at(ahead), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Token::Punct(c))
    }

    /// Consumes `word` if it comes next.
    fn eat(&mut self, word: &str) -> bool {
        let found = self.is_word(word);
        if found {
            self.at += 1;
        }
        found
    }

    /// Consumes the words of `words` if they all come next.
    fn eat_all(&mut self, words: &[&str]) -> bool {
        let found = words.iter().enumerate().all(|(i, w)| self.is_word_at(i, w));
        if found {
            self.at += words.len();
        }
        found
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.is_punct(c);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, word: &str) -> Result<(), ParseError> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(self.unexpected(word))
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.unexpected(&c.to_string()))
        }
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        match self.peek() {
            Some(token) => ParseError(format!("expected {wanted}, found {}", describe(token))),
            None => ParseError(format!("expected {wanted}, found the end of the statement")),
        }
    }

    fn at_end(&self) -> bool {
        self.peek().is_none() || (self.is_punct(';') && self.peek_at(1).is_none())
    }

    /// An identifier: quoted, or a bare word.
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Token::Ident(s) | Token::Word(s)) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    fn name(&mut self) -> Result<Name, ParseError> {
        let first = self.ident()?;
        if self.eat_punct('.') {
            Ok(Name {
                database: Some(first),
                table: self.ident()?,
            })
        } else {
            Ok(Name {
                database: None,
                table: first,
            })
        }
    }

    fn statement(&mut self) -> Result<Option<Ddl>, ParseError> {
        if self.eat("CREATE") {
            let or_replace = self.eat_all(&["OR", "REPLACE"]);
            self.eat("TEMPORARY");
            if !self.eat("TABLE") {
                return Ok(None); // CREATE INDEX, VIEW, TRIGGER, DATABASE, …
            }
            self.eat_all(&["IF", "NOT", "EXISTS"]);
            let table = self.name()?;
            let body = self.create_body()?;
            Ok(Some(Ddl::Create {
                table,
                body,
                or_replace,
            }))
        } else if self.eat("ALTER") {
            self.eat("ONLINE");
            self.eat("IGNORE");
            if !self.eat("TABLE") {
                return Ok(None);
            }
            self.eat_all(&["IF", "EXISTS"]);
            let table = self.name()?;
            let specs = self.alter_specs()?;
            Ok(Some(Ddl::Alter { table, specs }))
        } else if self.eat("DROP") {
            self.eat("TEMPORARY");
            if !self.eat("TABLE") && !self.eat("TABLES") {
                return Ok(None);
            }
            self.eat_all(&["IF", "EXISTS"]);
            let mut tables = vec![self.name()?];
            while self.eat_punct(',') {
                tables.push(self.name()?);
            }
            Ok(Some(Ddl::Drop { tables }))
        } else if self.eat("RENAME") {
            if !self.eat("TABLE") && !self.eat("TABLES") {
                return Ok(None);
            }
            let mut pairs = Vec::new();
            loop {
                let from = self.name()?;
                self.expect("TO")?;
                pairs.push((from, self.name()?));
                if !self.eat_punct(',') {
                    break;
                }
            }
            Ok(Some(Ddl::Rename { pairs }))
        } else if self.eat("TRUNCATE") {
            self.eat("TABLE");
            Ok(Some(Ddl::Truncate {
                table: self.name()?,
            }))
        } else {
            Ok(None)
        }
    }

    fn create_body(&mut self) -> Result<CreateBody, ParseError> {
        if self.eat("LIKE") {
            return Ok(CreateBody::Like(self.name()?));
        }
        if self.eat_punct('(') {
            if self.eat("LIKE") {
                let like = self.name()?;
                self.expect_punct(')')?;
                return Ok(CreateBody::Like(like));
            }
            let mut columns = Vec::new();
            let mut primary_key = Vec::new();
            loop {
                if let Some(key) = self.table_constraint()? {
                    if !key.is_empty() {
                        primary_key = key;
                    }
                } else {
                    columns.push(self.column_def()?);
                }
                if self.eat_punct(',') {
                    continue;
                }
                self.expect_punct(')')?;
                break;
            }
            let mut charset = None;
            while !self.at_end() {
                if self.is_word("AS") || self.is_word("SELECT") {
                    return Ok(CreateBody::Query);
                }
                if let Some(set) = self.charset_option()? {
                    charset = Some(set);
                } else {
                    self.skip_table_option();
                }
            }
            for column in &mut columns {
                if primary_key
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&column.name))
                {
                    column.nullable = false;
                }
            }
            return Ok(CreateBody::Columns {
                columns,
                primary_key,
                charset,
            });
        }
        Ok(CreateBody::Query)
    }

    /// A table constraint or index in CREATE TABLE: the primary key's columns, an empty list
    /// for any other constraint or index, or `None` when a column definition comes next.
    fn table_constraint(&mut self) -> Result<Option<Vec<String>>, ParseError> {
        let start = self.at;
        if self.eat("CONSTRAINT")
            && !self.is_word("PRIMARY")
            && !self.is_word("UNIQUE")
            && !self.is_word("FOREIGN")
            && !self.is_word("CHECK")
        {
            self.ident()?;
        }
        if self.eat_all(&["PRIMARY", "KEY"]) {
            let columns = self.index_columns()?;
            self.skip_to_element_end();
            return Ok(Some(columns));
        }
        // Reserved words: a column of that name would be quoted.
        let reserved = [
            "UNIQUE", "KEY", "INDEX", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK",
        ];
        // Not reserved: a column may have these names, and then a type follows.
        let unreserved = ["PERIOD", "VECTOR"];
        let is_index = reserved.iter().any(|w| self.is_word(w))
            || (unreserved.iter().any(|w| self.is_word(w))
                && !matches!(self.peek_at(1), Some(Token::Word(w)) if is_type_word(w)));
        if is_index || self.at > start {
            self.skip_to_element_end();
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }

    /// `(a, b(10) DESC, …)`: the column names.
    fn index_columns(&mut self) -> Result<Vec<String>, ParseError> {
        // An index name or `USING BTREE` may come first.
        while !self.is_punct('(') {
            if self.peek().is_none() {
                return Err(self.unexpected("("));
            }
            self.at += 1;
        }
        self.expect_punct('(')?;
        let mut columns = Vec::new();
        loop {
            columns.push(self.ident()?);
            // A prefix length, ASC/DESC.
            while !self.is_punct(',') && !self.is_punct(')') {
                if self.peek().is_none() {
                    return Err(self.unexpected(")"));
                }
                self.skip_one();
            }
            if self.eat_punct(')') {
                return Ok(columns);
            }
            self.expect_punct(',')?;
        }
    }

    /// Skips one token, or a whole parenthesised group.
    fn skip_one(&mut self) {
        if self.eat_punct('(') {
            let mut depth = 1;
            while depth > 0 {
                match self.peek() {
                    None => return,
                    Some(Token::Punct('(')) => depth += 1,
                    Some(Token::Punct(')')) => depth -= 1,
                    _ => {}
                }
                self.at += 1;
            }
        } else {
            self.at += 1;
        }
    }

    /// Skips to the `,` or `)` that ends the current element (not consuming it).
    fn skip_to_element_end(&mut self) {
        while self.peek().is_some() && !self.is_punct(',') && !self.is_punct(')') {
            self.skip_one();
        }
    }

    /// Skips to the `,` that ends an ALTER clause, or the end.
    fn skip_to_clause_end(&mut self) {
        while !self.at_end() && !self.is_punct(',') {
            self.skip_one();
        }
    }

    fn skip_table_option(&mut self) {
        self.skip_one();
    }

    /// `[DEFAULT] CHARACTER SET [=] x`, `[DEFAULT] CHARSET [=] x`: the charset.
    fn charset_option(&mut self) -> Result<Option<String>, ParseError> {
        let start = self.at;
        self.eat("DEFAULT");
        if self.eat_all(&["CHARACTER", "SET"]) || self.eat("CHARSET") {
            self.eat_punct('=');
            return Ok(Some(self.ident()?.to_ascii_lowercase()));
        }
        self.at = start;
        Ok(None)
    }

    fn column_def(&mut self) -> Result<ColumnDef, ParseError> {
        let name = self.ident()?;
        let (data_type, mut column_type, mut charset) = self.column_type()?;
        let mut nullable = true;
        let mut primary_key = false;
        loop {
            if self.peek().is_none() || self.is_punct(',') || self.is_punct(')') {
                break;
            }
            if self.is_word("FIRST") || self.is_word("AFTER") {
                break; // ALTER's placement, read by the caller
            }
            if self.eat_all(&["NOT", "NULL"]) {
                nullable = false;
            } else if self.eat("NULL") {
                nullable = true;
            } else if self.eat("UNIQUE") {
                self.eat("KEY");
            } else if self.eat_all(&["PRIMARY", "KEY"]) || self.eat("KEY") {
                primary_key = true;
                nullable = false;
            } else if self.eat_all(&["CHARACTER", "SET"]) || self.eat("CHARSET") {
                charset = Some(self.ident()?.to_ascii_lowercase());
            } else if self.eat("UNSIGNED") {
                column_type.push_str(" unsigned");
            } else {
                self.skip_one();
            }
        }
        Ok(ColumnDef {
            name,
            data_type,
            column_type,
            nullable,
            primary_key,
            charset,
        })
    }

    /// A column's type: its base name, its whole spelling, and a charset the type implies.
    fn column_type(&mut self) -> Result<(String, String, Option<String>), ParseError> {
        let word = match self.peek() {
            Some(Token::Word(w)) => w.to_ascii_lowercase(),
            _ => return Err(self.unexpected("a column type")),
        };
        self.at += 1;
        let mut charset = None;
        let (base, implied_params): (&str, Option<&str>) = match word.as_str() {
            "integer" => ("int", None),
            "int1" => ("tinyint", None),
            "int2" => ("smallint", None),
            "int3" | "middleint" => ("mediumint", None),
            "int4" => ("int", None),
            "int8" => ("bigint", None),
            "bool" | "boolean" => ("tinyint", Some("(1)")),
            "dec" | "numeric" | "fixed" => ("decimal", None),
            "real" | "float8" => ("double", None),
            "float4" => ("float", None),
            "double" => {
                self.eat("PRECISION");
                ("double", None)
            }
            "serial" => ("bigint", None),
            "character" | "nchar" | "national" => {
                if word != "character" {
                    charset = Some("utf8mb3".to_owned());
                }
                if word == "national" && !self.eat("CHAR") && !self.eat("CHARACTER") {
                    self.expect("VARCHAR")?;
                    ("varchar", None)
                } else if self.eat("VARYING") || self.eat("VARCHAR") {
                    ("varchar", None)
                } else {
                    ("char", None)
                }
            }
            "nvarchar" => {
                charset = Some("utf8mb3".to_owned());
                ("varchar", None)
            }
            "long" => {
                if self.eat("VARBINARY") {
                    ("mediumblob", None)
                } else {
                    self.eat("VARCHAR");
                    ("mediumtext", None)
                }
            }
            "char" | "varchar" => {
                if self.eat("VARYING") {
                    ("varchar", None)
                } else {
                    (word.as_str(), None)
                }
            }
            other if is_type_word(other) => (other, None),
            other => {
                return Err(ParseError(format!("unknown column type {other}")));
            }
        };
        let base = base.to_owned();
        let mut column_type = base.clone();
        if let Some(params) = implied_params {
            column_type.push_str(params);
        }
        if self.is_punct('(') {
            column_type.push_str(&self.type_params()?);
        }
        if word == "serial" {
            column_type.push_str(" unsigned");
        }
        // Attributes that belong to the type.
        loop {
            if self.eat("UNSIGNED") {
                column_type.push_str(" unsigned");
            } else if self.eat("SIGNED") || self.eat("ZEROFILL") || self.eat("BINARY") {
                // `varchar(5) binary` is a binary collation: still text.
            } else if self.eat("BYTE") {
                charset = Some("binary".to_owned());
            } else if self.eat("ASCII") {
                charset = Some("latin1".to_owned());
            } else if self.eat("UNICODE") {
                charset = Some("ucs2".to_owned());
            } else {
                break;
            }
        }
        Ok((base, column_type, charset))
    }

    /// `(…)` after a type, spelled back with strings quoted: `(12,2)`, `('a','b')`.
    fn type_params(&mut self) -> Result<String, ParseError> {
        self.expect_punct('(')?;
        let mut out = String::from("(");
        loop {
            match self.peek().cloned() {
                None => return Err(self.unexpected(")")),
                Some(Token::Punct(')')) => {
                    self.at += 1;
                    out.push(')');
                    return Ok(out);
                }
                Some(Token::Punct(',')) => out.push(','),
                Some(Token::Str(s)) => {
                    out.push('\'');
                    out.push_str(&s.replace('\'', "''"));
                    out.push('\'');
                }
                Some(Token::Number(n)) => out.push_str(&n),
                Some(Token::Word(w)) | Some(Token::Ident(w)) => out.push_str(&w),
                Some(Token::Punct(c)) => out.push(c),
            }
            self.at += 1;
        }
    }

    fn place(&mut self) -> Result<Place, ParseError> {
        if self.eat("FIRST") {
            Ok(Place::First)
        } else if self.eat("AFTER") {
            Ok(Place::After(self.ident()?))
        } else {
            Ok(Place::Default)
        }
    }

    fn alter_specs(&mut self) -> Result<Vec<AlterSpec>, ParseError> {
        let mut specs = Vec::new();
        while !self.at_end() {
            self.alter_spec(&mut specs)?;
            if !self.eat_punct(',') && !self.at_end() {
                // Table options may follow each other without commas.
                continue;
            }
        }
        Ok(specs)
    }

    fn alter_spec(&mut self, specs: &mut Vec<AlterSpec>) -> Result<(), ParseError> {
        if self.eat("ADD") {
            if self.is_word("CONSTRAINT")
                || self.is_word("PRIMARY")
                || [
                    "UNIQUE",
                    "KEY",
                    "INDEX",
                    "FULLTEXT",
                    "SPATIAL",
                    "FOREIGN",
                    "CHECK",
                    "PERIOD",
                    "PARTITION",
                    "VECTOR",
                ]
                .iter()
                .any(|w| self.is_word(w))
            {
                if let Some(key) = self.table_constraint()? {
                    if !key.is_empty() {
                        specs.push(AlterSpec::AddPrimaryKey(key));
                    }
                    return Ok(());
                }
                self.skip_to_clause_end();
                return Ok(());
            }
            self.eat("COLUMN");
            self.eat_all(&["IF", "NOT", "EXISTS"]);
            if self.eat_punct('(') {
                loop {
                    let column = self.column_def()?;
                    specs.push(AlterSpec::AddColumn(column, Place::Default));
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                return self.expect_punct(')');
            }
            let column = self.column_def()?;
            let place = self.place()?;
            specs.push(AlterSpec::AddColumn(column, place));
            return Ok(());
        }
        if self.eat("DROP") {
            if self.eat_all(&["PRIMARY", "KEY"]) {
                specs.push(AlterSpec::DropPrimaryKey);
                return Ok(());
            }
            if [
                "INDEX",
                "KEY",
                "FOREIGN",
                "CHECK",
                "CONSTRAINT",
                "PARTITION",
                "PERIOD",
            ]
            .iter()
            .any(|w| self.is_word(w))
            {
                self.skip_to_clause_end();
                return Ok(());
            }
            self.eat("COLUMN");
            self.eat_all(&["IF", "EXISTS"]);
            specs.push(AlterSpec::DropColumn(self.ident()?));
            // RESTRICT / CASCADE
            self.skip_to_clause_end();
            return Ok(());
        }
        if self.eat("MODIFY") {
            self.eat("COLUMN");
            self.eat_all(&["IF", "EXISTS"]);
            let column = self.column_def()?;
            let place = self.place()?;
            specs.push(AlterSpec::ChangeColumn {
                old: column.name.clone(),
                column,
                place,
            });
            return Ok(());
        }
        if self.eat("CHANGE") {
            self.eat("COLUMN");
            self.eat_all(&["IF", "EXISTS"]);
            let old = self.ident()?;
            let column = self.column_def()?;
            let place = self.place()?;
            specs.push(AlterSpec::ChangeColumn { old, column, place });
            return Ok(());
        }
        if self.eat("RENAME") {
            if self.eat("COLUMN") {
                let from = self.ident()?;
                self.expect("TO")?;
                specs.push(AlterSpec::RenameColumn {
                    from,
                    to: self.ident()?,
                });
                return Ok(());
            }
            if self.is_word("INDEX") || self.is_word("KEY") {
                self.skip_to_clause_end();
                return Ok(());
            }
            if !self.eat("TO") {
                self.eat("AS");
            }
            specs.push(AlterSpec::RenameTable(self.name()?));
            return Ok(());
        }
        if self.eat("CONVERT") {
            self.expect("TO")?;
            let Some(charset) = self.charset_option()? else {
                return Err(self.unexpected("CHARACTER SET"));
            };
            specs.push(AlterSpec::ConvertCharset(charset));
            self.skip_to_clause_end();
            return Ok(());
        }
        if let Some(charset) = self.charset_option()? {
            specs.push(AlterSpec::DefaultCharset(charset));
            return Ok(());
        }
        if self.eat("ALTER") {
            // ALTER [COLUMN] c SET DEFAULT …, DROP DEFAULT, SET VISIBLE; ALTER INDEX … VISIBLE.
            self.skip_to_clause_end();
            return Ok(());
        }
        if NO_EFFECT.split_whitespace().any(|w| self.is_word(w)) {
            self.skip_to_clause_end();
            return Ok(());
        }
        Err(self.unexpected("an ALTER TABLE clause"))
    }
}

/// ALTER TABLE clauses that leave the columns alone (options, partitions, maintenance).
const NO_EFFECT: &str = "\
    ENGINE AUTO_INCREMENT COMMENT ROW_FORMAT ALGORITHM LOCK FORCE ORDER COLLATE \
    KEY_BLOCK_SIZE STATS_PERSISTENT STATS_AUTO_RECALC STATS_SAMPLE_PAGES PACK_KEYS CHECKSUM \
    DELAY_KEY_WRITE MAX_ROWS MIN_ROWS AVG_ROW_LENGTH ENCRYPTED ENCRYPTION_KEY_ID \
    PAGE_COMPRESSED PAGE_COMPRESSION_LEVEL TRANSACTIONAL DISABLE ENABLE DISCARD IMPORT \
    ANALYZE OPTIMIZE REBUILD REPAIR COALESCE REORGANIZE EXCHANGE REMOVE TRUNCATE PARTITION \
    PARTITIONS DEFAULT WITH WITHOUT UPGRADE STORAGE TABLESPACE UNION INSERT_METHOD DATA \
    INDEX CONNECTION PASSWORD COMPRESSION SECONDARY_ENGINE IETF_QUOTES SEQUENCE NOWAIT WAIT";

/// Base type names of MySQL and MariaDB, with their synonyms.
const TYPE_WORDS: &str = "\
    tinyint smallint mediumint int integer bigint decimal dec numeric fixed float double \
    real bit bool boolean serial char varchar character nchar nvarchar national binary \
    varbinary tinytext text mediumtext longtext long tinyblob blob mediumblob longblob json \
    enum set date datetime timestamp time year uuid inet4 inet6 geometry point linestring \
    polygon multipoint multilinestring multipolygon geometrycollection vector int1 int2 int3 \
    int4 int8 middleint float4 float8";

fn is_type_word(word: &str) -> bool {
    TYPE_WORDS
        .split_whitespace()
        .any(|t| t.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests;
