//! Find projections (`projection` of `find`/`findAndModify`), as mongod 7.0 applies them.
//!
//! Inclusion (`{a: 1}`), exclusion (`{a: 0}`), `_id` included by default unless excluded,
//! dotted paths (through arrays of documents: inclusion keeps only the documents of an array,
//! exclusion keeps the scalars), `$slice`, `$elemMatch`, the positional `field.$`, and
//! aggregation expressions or literals as values (4.4+), whose results are appended after the
//! included fields. Mixing inclusion and exclusion other than for `_id` fails as mongod does
//! (31254 "Cannot do exclusion on field b in inclusion projection", 31253 "Cannot do inclusion
//! on field b in exclusion projection").

use bson::{Bson, Document, RawDocument, RawDocumentBuf};

use super::QueryError;
use super::compare::as_number;
use super::expr::{Expression, Variables};
use super::filter::{Filter, MatchDetails};
use super::numeric::Number;
use super::value::{DocRef, Val, check_nesting, raw_doc_to_document};

/// A parsed find projection.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Vec<(String, Item)>,
    inclusion: bool,
    vars: Variables,
    positional: bool,
}

#[derive(Debug, Clone)]
enum Item {
    Include,
    Exclude,
    Sub(Vec<(String, Item)>),
    Expr(Box<Expression>),
    Slice(i64, Option<i64>),
    ElemMatch(Box<Filter>),
    Positional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inclusion,
    Exclusion,
    Neutral,
}

fn loc(code: i32, msg: impl Into<String>) -> QueryError {
    QueryError::location(code, msg)
}

impl Projection {
    /// Parses a projection document.
    pub fn parse(spec: &RawDocument) -> Result<Self, QueryError> {
        Self::parse_with(spec, &Variables::new())
    }

    /// Parses a projection whose expressions may use the given variables.
    pub fn parse_with(spec: &RawDocument, vars: &Variables) -> Result<Self, QueryError> {
        Self::parse_ref(DocRef::Raw(spec), vars, false)
    }

    /// Parses a `$project` stage: like a find projection, except that `$slice`,
    /// `$elemMatch` and other operators are aggregation expressions and the positional form
    /// does not exist.
    pub(crate) fn parse_aggregation(
        spec: DocRef<'_>,
        vars: &Variables,
    ) -> Result<Self, QueryError> {
        if spec.is_empty() {
            return Err(loc(
                51272,
                "Invalid $project :: caused by :: projection specification must have at least one field",
            ));
        }
        Self::parse_ref(spec, vars, true)
    }

    fn parse_ref(
        spec: DocRef<'_>,
        vars: &Variables,
        aggregation: bool,
    ) -> Result<Self, QueryError> {
        check_nesting(spec)?;
        let mut root: Vec<(String, Item)> = Vec::new();
        let mut mode: Option<(bool, String)> = None;
        let mut positional = false;
        for (path, value) in spec.iter() {
            let (path, item) = if aggregation {
                parse_agg_item(path, value, vars)?
            } else {
                parse_item(path, value, vars, &mut positional)?
            };
            let kind = item_kind(&item);
            if path != "_id" && kind != Kind::Neutral {
                let incl = kind == Kind::Inclusion;
                match &mode {
                    None => mode = Some((incl, path.clone())),
                    Some((m, _)) if *m != incl => {
                        return Err(if *m {
                            loc(
                                31254,
                                format!(
                                    "Cannot do exclusion on field {path} in inclusion projection"
                                ),
                            )
                        } else {
                            loc(
                                31253,
                                format!(
                                    "Cannot do inclusion on field {path} in exclusion projection"
                                ),
                            )
                        });
                    }
                    _ => {}
                }
            }
            insert_path(&mut root, &path, item)?;
        }
        let inclusion = match mode {
            Some((m, _)) => m,
            // Only `_id` (and neutral $slice): `{_id: 1}` includes only _id, `{_id: 0}` excludes.
            None => root
                .iter()
                .any(|(k, i)| k == "_id" && item_kind(i) == Kind::Inclusion),
        };
        Ok(Projection {
            root,
            inclusion,
            vars: vars.clone(),
            positional,
        })
    }

    /// True when the projection uses the positional `field.$` form, which needs the
    /// [`MatchDetails`] of the query's filter.
    pub fn needs_match_details(&self) -> bool {
        self.positional
    }

    /// Projects one document. `details` are the filter's match details for positional
    /// projections (error 51246 "positional operator '.$' couldn't find a matching element in
    /// the array" when absent or without an array position, as mongod).
    pub fn apply(
        &self,
        doc: &RawDocument,
        details: Option<&MatchDetails>,
    ) -> Result<RawDocumentBuf, QueryError> {
        let out = self.apply_document(&raw_doc_to_document(doc), DocRef::Raw(doc), details)?;
        RawDocumentBuf::try_from(&out).map_err(|e| {
            QueryError::bad_value(format!("cannot encode the projected document: {e}"))
        })
    }

    /// Projects a decoded document (crate-internal).
    pub(crate) fn apply_bson(
        &self,
        doc: &Document,
        vars: &Variables,
    ) -> Result<Document, QueryError> {
        self.apply_with(doc, DocRef::Owned(doc), None, vars)
    }

    /// Projects a decoded document; `raw` is the same document as seen by expressions.
    fn apply_document(
        &self,
        doc: &Document,
        raw: DocRef<'_>,
        details: Option<&MatchDetails>,
    ) -> Result<Document, QueryError> {
        self.apply_with(doc, raw, details, &self.vars)
    }

    fn apply_with(
        &self,
        doc: &Document,
        raw: DocRef<'_>,
        details: Option<&MatchDetails>,
        vars: &Variables,
    ) -> Result<Document, QueryError> {
        let ctx = Ctx {
            root: raw,
            vars,
            positional: details.and_then(MatchDetails::positional_index),
        };
        if self.inclusion {
            let mut out = include_level(doc, &self.root, &ctx, true)?;
            append_computed(&mut out, &self.root, &ctx)?;
            Ok(out)
        } else {
            exclude_level(doc, &self.root, &ctx)
        }
    }
}

struct Ctx<'a> {
    root: DocRef<'a>,
    vars: &'a Variables,
    positional: Option<usize>,
}

fn item_kind(item: &Item) -> Kind {
    match item {
        Item::Include | Item::Expr(_) | Item::ElemMatch(_) | Item::Positional => Kind::Inclusion,
        Item::Exclude => Kind::Exclusion,
        Item::Slice(..) => Kind::Neutral,
        Item::Sub(children) => {
            let kinds: Vec<Kind> = children.iter().map(|(_, i)| item_kind(i)).collect();
            if kinds.contains(&Kind::Inclusion) {
                Kind::Inclusion
            } else if kinds.contains(&Kind::Exclusion) {
                Kind::Exclusion
            } else {
                Kind::Neutral
            }
        }
    }
}

fn parse_item(
    path: &str,
    value: Val<'_>,
    vars: &Variables,
    positional: &mut bool,
) -> Result<(String, Item), QueryError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(loc(
            if path.is_empty() { 40352 } else { 15998 },
            "FieldPath cannot be constructed with empty string",
        ));
    }
    if let Some(base) = path.strip_suffix(".$") {
        if *positional {
            return Err(loc(
                31276,
                "Cannot specify more than one positional projection per query.",
            ));
        }
        *positional = true;
        if base.split('.').any(|p| p == "$") {
            return Err(loc(
                31394,
                "As of 4.4, it's illegal to specify positional operator in the middle of a path.Positional projection may only be used at the end, for example: a.b.$. If the query previously used a form like a.b.$.d, remove the parts following the '$' and the results will be equivalent.".to_string(),
            ));
        }
        return Ok((base.to_owned(), Item::Positional));
    }
    if path.split('.').any(|p| p == "$") {
        return Err(loc(
            31394,
            "As of 4.4, it's illegal to specify positional operator in the middle of a path.Positional projection may only be used at the end, for example: a.b.$. If the query previously used a form like a.b.$.d, remove the parts following the '$' and the results will be equivalent.",
        ));
    }
    if path.starts_with('$') {
        return Err(loc(
            16410,
            "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
        ));
    }
    let item = match value.view() {
        super::value::View::Bool(b) => {
            if b {
                Item::Include
            } else {
                Item::Exclude
            }
        }
        v if as_number(v).is_some() => {
            let zero = match as_number(v) {
                Some(Number::Int(i)) => i == 0,
                Some(Number::Double(d)) => d == 0.0,
                Some(n @ Number::Decimal(_)) => {
                    super::numeric::cmp_numbers(n, Number::Int(0)).is_eq()
                }
                None => false,
            };
            if zero { Item::Exclude } else { Item::Include }
        }
        super::value::View::Doc(d) => {
            let first = d.iter().next();
            match first {
                Some((op, arg)) if op.starts_with('$') => {
                    if d.iter().count() > 1 && matches!(op, "$slice" | "$elemMatch" | "$meta") {
                        return Err(loc(
                            31259,
                            format!(
                                "An expression specification must contain exactly one field, the name of the expression. Found {} fields in {}, while parsing object {}",
                                d.iter().count(),
                                d.to_document(),
                                d.to_document()
                            ),
                        ));
                    }
                    match op {
                        "$slice" => parse_slice(arg)?,
                        "$elemMatch" => {
                            let Some(cond) = arg.as_doc() else {
                                return Err(QueryError::bad_value(
                                    "elemMatch: Invalid argument, object required.",
                                ));
                            };
                            if path.contains('.') {
                                return Err(loc(
                                    31275,
                                    "Cannot use $elemMatch projection on a nested field.",
                                ));
                            }
                            Item::ElemMatch(Box::new(Filter::parse_doc_ref(cond, vars, false)?))
                        }
                        "$meta" => {
                            return Err(match arg.as_str() {
                                Some("textScore") => QueryError::new(
                                    17311,
                                    "Location17311",
                                    "query requires text score metadata, but it is not available",
                                ),
                                _ => QueryError::not_implemented("$meta projections"),
                            });
                        }
                        _ => Item::Expr(Box::new(Expression::parse_val(value, vars)?)),
                    }
                }
                // A nested projection document: {a: {b: 1}} is {"a.b": 1}.
                _ => {
                    let mut children = Vec::new();
                    for (k, v) in d.iter() {
                        let (p, item) = parse_item(k, v, vars, positional)?;
                        insert_path(&mut children, &p, item)?;
                    }
                    if children.is_empty() {
                        return Err(loc(
                            51270,
                            format!(
                                "An empty sub-projection is not a valid value. Found empty object at path {path}"
                            ),
                        ));
                    }
                    Item::Sub(children)
                }
            }
        }
        // Strings, arrays and other literals are expressions (4.4+): "$b" computes, "x" sets.
        _ => Item::Expr(Box::new(Expression::parse_val(value, vars)?)),
    };
    Ok((path.to_owned(), item))
}

/// One field of a `$project` stage.
fn parse_agg_item(
    path: &str,
    value: Val<'_>,
    vars: &Variables,
) -> Result<(String, Item), QueryError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(loc(
            40352,
            "FieldPath cannot be constructed with empty string",
        ));
    }
    if path.starts_with('$') {
        return Err(loc(
            16410,
            "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
        ));
    }
    let item = match value.view() {
        super::value::View::Bool(b) => {
            if b {
                Item::Include
            } else {
                Item::Exclude
            }
        }
        v if as_number(v).is_some() => {
            let zero = as_number(v)
                .is_some_and(|n| super::numeric::cmp_numbers(n, Number::Int(0)).is_eq());
            if zero { Item::Exclude } else { Item::Include }
        }
        super::value::View::Doc(d) if !d.iter().next().is_some_and(|(k, _)| k.starts_with('$')) => {
            let mut children = Vec::new();
            for (k, v) in d.iter() {
                let (p, item) = parse_agg_item(k, v, vars)?;
                insert_path(&mut children, &p, item)?;
            }
            if children.is_empty() {
                return Err(loc(
                    51270,
                    format!(
                        "An empty sub-projection is not a valid value. Found empty object at path {path}"
                    ),
                ));
            }
            Item::Sub(children)
        }
        _ => Item::Expr(Box::new(Expression::parse_val(value, vars)?)),
    };
    Ok((path.to_owned(), item))
}

fn parse_slice(arg: Val<'_>) -> Result<Item, QueryError> {
    let int = |v: Val<'_>| match as_number(v.view()) {
        Some(Number::Int(i)) => Some(i),
        Some(Number::Double(d)) => super::numeric::f64_to_i64_exact(d.trunc()),
        _ => None,
    };
    if let Some(a) = arg.as_arr() {
        let items: Vec<Val<'_>> = a.iter().collect();
        if items.len() != 2 {
            return Err(loc(
                28724,
                "First argument to $slice must be an array, but is of type: array",
            ));
        }
        let skip =
            int(items[0]).ok_or_else(|| loc(28724, "$slice's first argument must be numeric"))?;
        let limit =
            int(items[1]).ok_or_else(|| loc(28724, "$slice's second argument must be numeric"))?;
        if limit <= 0 {
            return Err(loc(
                28724,
                format!("Invalid $slice syntax. The limit must be positive. limit: {limit}"),
            ));
        }
        return Ok(Item::Slice(skip, Some(limit)));
    }
    match int(arg) {
        Some(n) => Ok(Item::Slice(n, None)),
        None => Err(loc(
            28667,
            "Invalid $slice syntax. The given syntax did not match the find() syntax because :: Location31273: $slice only supports numbers and [skip, limit] arrays",
        )),
    }
}

/// Adds `item` at a dotted path of the tree (mongod: path collisions are errors).
fn insert_path(tree: &mut Vec<(String, Item)>, path: &str, item: Item) -> Result<(), QueryError> {
    let (first, rest) = match path.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (path, None),
    };
    let pos = tree.iter().position(|(k, _)| k == first);
    match (rest, pos) {
        (None, None) => {
            tree.push((first.to_owned(), item));
            Ok(())
        }
        (None, Some(p)) => match (&mut tree[p].1, item) {
            (Item::Sub(existing), Item::Sub(new)) => {
                for (k, i) in new {
                    insert_path(existing, &k, i)?;
                }
                Ok(())
            }
            _ => Err(loc(31250, format!("Path collision at {path}"))),
        },
        (Some(r), None) => {
            let mut sub = Vec::new();
            insert_path(&mut sub, r, item)?;
            tree.push((first.to_owned(), Item::Sub(sub)));
            Ok(())
        }
        (Some(r), Some(p)) => match &mut tree[p].1 {
            Item::Sub(existing) => insert_path(existing, r, item),
            _ => Err(loc(
                31250,
                format!("Path collision at {path} remaining portion {r}"),
            )),
        },
    }
}

fn find<'a>(tree: &'a [(String, Item)], k: &str) -> Option<&'a Item> {
    tree.iter().find(|(n, _)| n == k).map(|(_, i)| i)
}

/// Inclusion at one document level, in document order; `_id` kept unless excluded at the top.
fn include_level(
    doc: &Document,
    tree: &[(String, Item)],
    ctx: &Ctx<'_>,
    top: bool,
) -> Result<Document, QueryError> {
    let mut out = Document::new();
    for (k, v) in doc {
        let item = find(tree, k);
        let item = match item {
            None if top && k == "_id" => Some(&Item::Include),
            other => other,
        };
        let Some(item) = item else {
            continue;
        };
        match item {
            Item::Include => {
                out.insert(k.clone(), v.clone());
            }
            Item::Exclude | Item::Expr(_) => {}
            Item::Sub(sub) => {
                if let Some(x) = include_value(v, sub, ctx)? {
                    out.insert(k.clone(), x);
                }
            }
            Item::Slice(skip, limit) => {
                out.insert(k.clone(), slice(v, *skip, *limit));
            }
            Item::ElemMatch(f) => {
                if let Bson::Array(a) = v {
                    for e in a {
                        if let Bson::Document(d) = e
                            && f.matches_bson(d)?
                        {
                            out.insert(k.clone(), Bson::Array(vec![e.clone()]));
                            break;
                        }
                    }
                }
            }
            Item::Positional => {
                let Bson::Array(a) = v else {
                    return Err(positional_error());
                };
                let Some(e) = ctx.positional.and_then(|i| a.get(i)) else {
                    return Err(positional_error());
                };
                out.insert(k.clone(), Bson::Array(vec![e.clone()]));
            }
        }
    }
    Ok(out)
}

fn positional_error() -> QueryError {
    loc(
        51246,
        "positional operator '.$' couldn't find a matching element in the array",
    )
}

/// Inclusion below a field: documents are projected, arrays keep only their (projected)
/// documents and nested arrays, scalars are dropped.
fn include_value(
    v: &Bson,
    sub: &[(String, Item)],
    ctx: &Ctx<'_>,
) -> Result<Option<Bson>, QueryError> {
    Ok(match v {
        Bson::Document(d) => {
            let mut out = include_level(d, sub, ctx, false)?;
            append_computed(&mut out, sub, ctx)?;
            Some(Bson::Document(out))
        }
        Bson::Array(items) => {
            let mut out = Vec::new();
            for e in items {
                if matches!(e, Bson::Document(_) | Bson::Array(_))
                    && let Some(x) = include_value(e, sub, ctx)?
                {
                    out.push(x);
                }
            }
            Some(Bson::Array(out))
        }
        _ => None,
    })
}

/// Appends computed fields (expressions) of an inclusion projection, creating documents for
/// nested ones.
fn append_computed(
    out: &mut Document,
    tree: &[(String, Item)],
    ctx: &Ctx<'_>,
) -> Result<(), QueryError> {
    for (k, item) in tree {
        match item {
            Item::Expr(e) => {
                if let Some(v) = e.eval_doc(ctx.root, ctx.vars)? {
                    out.insert(k.clone(), v);
                }
            }
            Item::Sub(sub) if has_computed(sub) && !out.contains_key(k) => {
                let mut d = Document::new();
                append_computed(&mut d, sub, ctx)?;
                out.insert(k.clone(), d);
            }
            _ => {}
        }
    }
    Ok(())
}

fn has_computed(tree: &[(String, Item)]) -> bool {
    tree.iter().any(|(_, i)| match i {
        Item::Expr(_) => true,
        Item::Sub(s) => has_computed(s),
        _ => false,
    })
}

fn exclude_level(
    doc: &Document,
    tree: &[(String, Item)],
    ctx: &Ctx<'_>,
) -> Result<Document, QueryError> {
    let mut out = Document::new();
    for (k, v) in doc {
        match find(tree, k) {
            None | Some(Item::Include) => {
                out.insert(k.clone(), v.clone());
            }
            Some(Item::Exclude) => {}
            Some(Item::Slice(skip, limit)) => {
                out.insert(k.clone(), slice(v, *skip, *limit));
            }
            Some(Item::Sub(sub)) => {
                out.insert(k.clone(), exclude_value(v, sub, ctx)?);
            }
            Some(_) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn exclude_value(v: &Bson, sub: &[(String, Item)], ctx: &Ctx<'_>) -> Result<Bson, QueryError> {
    Ok(match v {
        Bson::Document(d) => Bson::Document(exclude_level(d, sub, ctx)?),
        Bson::Array(items) => Bson::Array(
            items
                .iter()
                .map(|e| exclude_value(e, sub, ctx))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        other => other.clone(),
    })
}

/// `$slice` of a find projection; non-arrays are returned unchanged.
fn slice(v: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(items) = v else {
        return v.clone();
    };
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let (start, count) = match limit {
        None => {
            if skip >= 0 {
                (0, skip)
            } else {
                (len.saturating_add(skip).max(0), len)
            }
        }
        Some(l) => {
            let start = if skip >= 0 {
                skip.min(len)
            } else {
                len.saturating_add(skip).max(0)
            };
            (start, l)
        }
    };
    let start = usize::try_from(start).unwrap_or(0);
    let count = usize::try_from(count).unwrap_or(0);
    Bson::Array(items.iter().skip(start).take(count).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn project(spec: RawDocumentBuf, d: RawDocumentBuf) -> Document {
        let p = Projection::parse(&spec).expect("valid projection");
        raw_doc_to_document(&p.apply(&d, None).expect("applies"))
    }

    #[test]
    fn inclusion_keeps_document_order_and_id() {
        let d = rawdoc! {"_id": 1, "b": 2, "a": 1, "c": 3};
        assert_eq!(
            project(rawdoc! {"a": 1, "b": 1}, d.clone()),
            doc! {"_id": 1, "b": 2, "a": 1}
        );
        assert_eq!(
            project(rawdoc! {"a": 1, "_id": 0}, d.clone()),
            doc! {"a": 1}
        );
        assert_eq!(project(rawdoc! {"_id": 1}, d.clone()), doc! {"_id": 1});
        assert_eq!(
            project(rawdoc! {}, d.clone()),
            doc! {"_id": 1, "b": 2, "a": 1, "c": 3}
        );
    }

    #[test]
    fn exclusion() {
        let d = rawdoc! {"_id": 1, "b": 2, "a": {"x": 1, "y": 2}};
        assert_eq!(
            project(rawdoc! {"b": 0}, d.clone()),
            doc! {"_id": 1, "a": {"x": 1, "y": 2}}
        );
        assert_eq!(
            project(rawdoc! {"a.x": 0, "_id": 0}, d.clone()),
            doc! {"b": 2, "a": {"y": 2}}
        );
        assert_eq!(
            project(rawdoc! {"_id": 0}, d),
            doc! {"b": 2, "a": {"x": 1, "y": 2}}
        );
    }

    #[test]
    fn dotted_paths_through_arrays() {
        let d = rawdoc! {"_id": 1, "a": [{"b": 1, "c": 2}, 3, {"c": 1}]};
        assert_eq!(
            project(rawdoc! {"a.b": 1}, d.clone()),
            doc! {"_id": 1, "a": [{"b": 1}, {}]}
        );
        assert_eq!(
            project(rawdoc! {"a.b": 0}, d.clone()),
            doc! {"_id": 1, "a": [{"c": 2}, 3, {"c": 1}]}
        );
        assert_eq!(
            project(rawdoc! {"a": {"c": 1}}, d),
            doc! {"_id": 1, "a": [{"c": 2}, {"c": 1}]}
        );
    }

    #[test]
    fn mixing_inclusion_and_exclusion_fails_with_server_codes() {
        let e = Projection::parse(&rawdoc! {"a": 1, "b": 0}).expect_err("mixed");
        assert_eq!(e.code, 31254);
        assert_eq!(
            e.message,
            "Cannot do exclusion on field b in inclusion projection"
        );
        let e = Projection::parse(&rawdoc! {"a": 0, "b": 1}).expect_err("mixed");
        assert_eq!(e.code, 31253);
        assert_eq!(
            e.message,
            "Cannot do inclusion on field b in exclusion projection"
        );
        assert!(Projection::parse(&rawdoc! {"a": 1, "_id": 0}).is_ok());
        assert_eq!(
            Projection::parse(&rawdoc! {"a": 1, "a.b": 1})
                .expect_err("collision")
                .code,
            31250
        );
    }

    #[test]
    fn slice_elem_match_positional_and_expressions() {
        let d = rawdoc! {"_id": 1, "a": [1, 2, 3, 4], "g": [{"s": 1}, {"s": 5}, {"s": 7}], "x": 2};
        assert_eq!(
            project(
                rawdoc! {"a": {"$slice": 2}, "_id": 0, "g": 0, "x": 0},
                d.clone()
            ),
            doc! {"a": [1, 2]}
        );
        assert_eq!(
            project(rawdoc! {"a": {"$slice": -1}, "x": 1}, d.clone()),
            doc! {"_id": 1, "a": [4], "x": 2}
        );
        assert_eq!(
            project(rawdoc! {"a": {"$slice": [1, 2]}, "x": 1}, d.clone()),
            doc! {"_id": 1, "a": [2, 3], "x": 2}
        );
        assert_eq!(
            project(rawdoc! {"g": {"$elemMatch": {"s": {"$gt": 4}}}}, d.clone()),
            doc! {"_id": 1, "g": [{"s": 5}]}
        );
        assert_eq!(
            project(
                rawdoc! {"y": {"$add": ["$x", 1]}, "lit": "text", "x": 1},
                d.clone()
            ),
            doc! {"_id": 1, "x": 2, "y": 3, "lit": "text"}
        );
        let f = Filter::parse(&rawdoc! {"g.s": {"$gt": 6}}).expect("filter");
        let details = f.matches_details(&d).expect("eval").expect("match");
        let p = Projection::parse(&rawdoc! {"g.$": 1}).expect("positional");
        assert!(p.needs_match_details());
        let out = raw_doc_to_document(&p.apply(&d, Some(&details)).expect("applies"));
        assert_eq!(out, doc! {"_id": 1, "g": [{"s": 7}]});
        assert_eq!(p.apply(&d, None).expect_err("no details").code, 51246);
    }
}
