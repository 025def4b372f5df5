//! The sessions page's filters as one SQL query over the index, newest first, a page at a time.
//!
//! The search text goes to FTS5 only as one quoted phrase ([`phrase`]), so nothing a reviewer
//! types (quotes, `NEAR(`, `OR`, `*`, column names) is FTS5 syntax.
//!
//! A search is planned by how many sessions match ([`count_matches`]): up to [`FEW`], the page
//! is built from the matches (looked up by rowid and sorted); with more, the sessions are walked
//! newest first until a page is full, which stops early because matches are many. Either way
//! the rows are the same; only the work differs (walking 100 000 sessions for one match, or
//! sorting 100 000 matches for one page, each cost more than the page's budget).

use rusqlite::types::Value;

/// Rows per page.
pub const PAGE: usize = 50;

/// The filters, read and checked (see [`crate::console::catalog::Filter`]).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub admin: String,
    pub target: String,
    /// Microseconds since the epoch.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub now: i64,
    /// `live`, `success`, `failure`, `ended` or empty.
    pub status: String,
    /// `ok`, `problem` or empty.
    pub integrity: String,
    pub q: String,
    /// From 0.
    pub page: usize,
}

/// Matches up to which a search's page is built from its matches.
pub const FEW: usize = 2000;

/// `text` as one FTS5 phrase: in double quotes, a double quote doubled.
pub fn phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// `text` as a LIKE pattern that matches it anywhere, with `\` as the escape character.
fn like(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The search text, when it is long enough for the full-text index (trigrams).
fn indexed_needle(q: &Query) -> Option<&str> {
    let needle = q.q.trim();
    (needle.chars().count() >= 3).then_some(needle)
}

/// The SQL and its parameters that count the sessions whose indexed text matches the search,
/// up to `limit`; `None` without a search the full-text index answers.
pub fn count_matches(q: &Query, limit: usize) -> Option<(&'static str, [Value; 2])> {
    let needle = indexed_needle(q)?;
    Some((
        "SELECT count(*) FROM (SELECT rowid FROM output WHERE output MATCH ?1 LIMIT ?2)",
        [
            Value::Text(phrase(needle)),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ],
    ))
}

/// The SQL and its parameters for one page of rows (one row more than a page, to know whether
/// there is a next one). `live`: the sessions running now. `few`: the search matches few
/// sessions (see [`count_matches`]), so the page is built from its matches.
pub fn sql(q: &Query, live: &[String], few: bool) -> (String, Vec<Value>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    if !q.admin.trim().is_empty() {
        let a = arg(Value::Text(q.admin.trim().to_owned()));
        conds.push(format!("instr(admin, {a}) > 0"));
    }
    if !q.target.trim().is_empty() {
        let a = arg(Value::Text(q.target.trim().to_owned()));
        conds.push(format!("instr(target, {a}) > 0"));
    }
    if let Some(from) = q.from {
        let (f, n) = (arg(Value::Integer(from)), arg(Value::Integer(q.now)));
        conds.push(format!("coalesce(end_us, {n}) >= {f}"));
    }
    if let Some(to) = q.to {
        let t = arg(Value::Integer(to));
        conds.push(format!("start_us <= {t}"));
    }
    let live_list = live
        .iter()
        .map(|id| arg(Value::Text(id.clone())))
        .collect::<Vec<_>>()
        .join(", ");
    let not_live = format!("id NOT IN ({live_list})");
    match q.status.as_str() {
        "live" => conds.push(format!("id IN ({live_list})")),
        "success" => conds.push(format!("{not_live} AND exit_status = 0")),
        "failure" => conds.push(format!("{not_live} AND exit_status <> 0")),
        "ended" => conds.push(format!("{not_live} AND exit_status IS NULL")),
        _ => {}
    }
    match q.integrity.as_str() {
        "ok" => conds.push("ok = 1".into()),
        "problem" => conds.push("ok = 0".into()),
        _ => {}
    }
    let needle = q.q.trim();
    // Rows whose text the index does not hold whole are searched in their recordings.
    let streamed = |args: &mut dyn FnMut(Value) -> String| {
        let n = args(Value::Text(needle.to_lowercase()));
        format!("(searched = 0 AND output_contains(id, {n}))")
    };
    // The plan is named, not left to the planner, which cannot tell few matches from many.
    let mut plan = "";
    if let Some(needle) = indexed_needle(q) {
        let p = arg(Value::Text(phrase(needle)));
        let n = arg(Value::Text(needle.to_lowercase()));
        conds.push(if few {
            // The matches looked up by rowid (no index) and sorted; `sessions_streamed` keeps
            // the second part from reading every row.
            plan = "NOT INDEXED";
            format!(
                "rowid IN (SELECT rowid FROM output WHERE output MATCH {p} UNION ALL \
                 SELECT rowid FROM sessions WHERE searched = 0 AND output_contains(id, {n}))"
            )
        } else {
            plan = "INDEXED BY sessions_start";
            format!(
                "(rowid IN (SELECT rowid FROM output WHERE output MATCH {p}) OR \
                 (searched = 0 AND output_contains(id, {n})))"
            )
        });
    } else if !needle.is_empty() {
        // Too short for trigrams: a scan of the stored text (LIKE folds ASCII case only).
        let p = arg(Value::Text(like(needle)));
        let s = streamed(&mut arg);
        conds.push(format!(
            "(rowid IN (SELECT rowid FROM output WHERE text LIKE {p} ESCAPE '\\') OR {s})"
        ));
    }
    let limit = arg(Value::Integer((PAGE + 1) as i64));
    let offset = arg(Value::Integer((q.page.saturating_mul(PAGE)) as i64));
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (
        format!(
            "SELECT meta, recorded, ok, integrity FROM sessions {plan} {filter}
             ORDER BY start_us DESC, id DESC LIMIT {limit} OFFSET {offset}"
        ),
        args,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrase_quotes_everything() {
        assert_eq!(phrase("rm -rf"), "\"rm -rf\"");
        assert_eq!(phrase("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(phrase("NEAR(a b)"), "\"NEAR(a b)\"");
    }

    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(like("5%_\\"), "%5\\%\\_\\\\%");
    }

    #[test]
    fn pages_and_live_ids_are_parameters() {
        let q = Query {
            status: "live".into(),
            page: 2,
            ..Query::default()
        };
        let (sql, args) = sql(&q, &["a".into(), "b".into()], false);
        assert!(sql.contains("id IN (?1, ?2)"), "{sql}");
        assert!(sql.contains("LIMIT ?3 OFFSET ?4"), "{sql}");
        assert_eq!(args[3], Value::Integer(2 * PAGE as i64));
    }
}
