//! The sessions page's filters as SQL over the index, newest first, a page at a time.
//!
//! The search text goes to FTS5 only as one quoted phrase ([`phrase`]), so nothing a reviewer
//! types (quotes, `NEAR(`, `OR`, `*`, column names) is FTS5 syntax.
//!
//! A search is planned by how many sessions match ([`count_matches`]): below [`FEW`], the page
//! is picked from the candidates, the matches and the rows searched in their recordings, looked
//! up and sorted ([`candidates`]); otherwise the sessions are walked newest first until a page
//! is full ([`sql`]), which stops early because matches are many. Either way the rows are the
//! same, and a recording is read only for a row reached before the page is full; only the work
//! differs (walking 100 000 sessions for one match, or sorting 100 000 matches for one page,
//! each costs more than a page's budget).

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

/// Matches below which a search's page is built from its matches.
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

/// The search text as the recordings are searched for it (see [`super::streamed`]).
pub fn streamed_needle(q: &Query) -> String {
    q.q.trim().to_lowercase()
}

/// The conditions of every filter but the search, their parameters added with `arg`.
/// `live`: the sessions running now.
fn filters(q: &Query, live: &[String], arg: &mut dyn FnMut(Value) -> String) -> Vec<String> {
    let mut conds: Vec<String> = Vec::new();
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
    // The live ids are parameters only where a condition names them: SQLite counts a
    // statement's parameters up to the highest it uses.
    let mut live_list = || {
        live.iter()
            .map(|id| arg(Value::Text(id.clone())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match q.status.as_str() {
        "live" => conds.push(format!("id IN ({})", live_list())),
        "success" => conds.push(format!("id NOT IN ({}) AND exit_status = 0", live_list())),
        "failure" => conds.push(format!("id NOT IN ({}) AND exit_status <> 0", live_list())),
        "ended" => conds.push(format!(
            "id NOT IN ({}) AND exit_status IS NULL",
            live_list()
        )),
        _ => {}
    }
    match q.integrity.as_str() {
        "ok" => conds.push("ok = 1".into()),
        "problem" => conds.push("ok = 0".into()),
        _ => {}
    }
    conds
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// The SQL and its parameters for one page of rows (one row more than a page, to know whether
/// there is a next one), the sessions walked newest first: every search but one with few
/// matches ([`candidates`]). `live`: the sessions running now.
pub fn sql(q: &Query, live: &[String]) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    let mut conds = filters(q, live, &mut arg);
    let needle = q.q.trim();
    // Rows whose text the index does not hold whole are searched in their recordings, each
    // only when the walk reaches it.
    let streamed = |args: &mut dyn FnMut(Value) -> String| {
        let n = args(Value::Text(streamed_needle(q)));
        format!("(searched = 0 AND output_contains(id, {n}))")
    };
    if let Some(needle) = indexed_needle(q) {
        let p = arg(Value::Text(phrase(needle)));
        let s = streamed(&mut arg);
        conds.push(format!(
            "(rowid IN (SELECT rowid FROM output WHERE output MATCH {p}) OR {s})"
        ));
    } else if !needle.is_empty() {
        // Too short for trigrams: a scan of the stored text (LIKE folds ASCII case only).
        let p = arg(Value::Text(like(needle)));
        let s = streamed(&mut arg);
        conds.push(format!(
            "(rowid IN (SELECT rowid FROM output WHERE text LIKE {p} ESCAPE '\\') OR {s})"
        ));
    }
    // A search walks the list's order by name: the planner would rather look every candidate
    // up (`sessions_streamed`) and sort, reading every recording a search streams.
    let plan = if needle.is_empty() {
        ""
    } else {
        "INDEXED BY sessions_start"
    };
    let limit = arg(Value::Integer((PAGE + 1) as i64));
    let offset = arg(Value::Integer(
        i64::try_from(q.page.saturating_mul(PAGE)).unwrap_or(i64::MAX),
    ));
    (
        format!(
            "SELECT meta, recorded, ok, integrity FROM sessions {plan} {}
             ORDER BY start_us DESC, id DESC LIMIT {limit} OFFSET {offset}",
            where_clause(&conds)
        ),
        args,
    )
}

/// For a search with few matches (see [`count_matches`]): the SQL and its parameters for the
/// candidates in the list's order, without reading any recording: the matches and the rows
/// whose text the index does not hold whole, that pass the other filters. Each row is its
/// rowid, id, and whether its recording must be read to know (no match in the text held).
/// The caller reads recordings in order only until it has its page; then [`PICKED`].
pub fn candidates(q: &Query, live: &[String]) -> Option<(String, Vec<Value>)> {
    let needle = indexed_needle(q)?;
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    let p = arg(Value::Text(phrase(needle)));
    let mut conds = filters(q, live, &mut arg);
    // The matches and the streamed rows looked up (`sessions_streamed`, rowid) and sorted,
    // named: the planner cannot tell few matches from many.
    conds.push(format!(
        "rowid IN (SELECT rowid FROM output WHERE output MATCH {p} UNION ALL \
         SELECT rowid FROM sessions WHERE searched = 0)"
    ));
    Some((
        format!(
            "SELECT rowid, id, searched = 0 AND rowid NOT IN \
             (SELECT rowid FROM output WHERE output MATCH {p}) \
             FROM sessions NOT INDEXED {} ORDER BY start_us DESC, id DESC",
            where_clause(&conds)
        ),
        args,
    ))
}

/// The rows of a page picked from [`candidates`]: ?1 their rowids as a JSON array.
pub const PICKED: &str = "SELECT meta, recorded, ok, integrity FROM sessions \
     WHERE rowid IN (SELECT value FROM json_each(?1)) ORDER BY start_us DESC, id DESC";

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
        let (sql, args) = sql(&q, &["a".into(), "b".into()]);
        assert!(sql.contains("id IN (?1, ?2)"), "{sql}");
        assert!(sql.contains("LIMIT ?3 OFFSET ?4"), "{sql}");
        assert_eq!(args[3], Value::Integer(2 * PAGE as i64));
    }
}
