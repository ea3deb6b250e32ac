//! `/report/<YYYY-MM>` (HTML) and `/report/<YYYY-MM>.csv`: the monthly
//! report from the store's history (read-only, on a blocking thread) and
//! the live ledger's holes (copied under the read lock, nothing held
//! across the read). `/report` sends to the current month.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::{LangQuery, SharedView};
use crate::report::{build, holes, read_history, render, Format, Month, Page};

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

pub(super) async fn current(
    State(v): State<Arc<SharedView>>,
    Query(q): Query<LangQuery>,
) -> Response {
    let Some(src) = v.report.clone() else {
        return not_found("no report: these pages run without a store");
    };
    let m = Month::of_ms(v.now_ms(), src.cfg.offset_s);
    let lang = if q.lang.as_deref() == Some("en") {
        "?lang=en"
    } else {
        ""
    };
    Redirect::to(&format!("/report/{m}{lang}")).into_response()
}

pub(super) async fn month(
    State(v): State<Arc<SharedView>>,
    Path(m): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let Some(src) = v.report.clone() else {
        return not_found("no report: these pages run without a store");
    };
    let (name, format) = match m.strip_suffix(".csv") {
        Some(x) => (x, Format::Csv),
        None => (m.as_str(), Format::Html),
    };
    let Ok(month) = name.parse::<Month>() else {
        return not_found("not a month like 2026-12");
    };
    let now = v.now_ms();
    let mut gaps: BTreeMap<String, Vec<_>> = {
        let m = v.read();
        m.ledger
            .sites()
            .map(|s| (s.to_owned(), holes(&m.ledger, s)))
            .collect()
    };
    let s2 = src.clone();
    let rows = tokio::task::spawn_blocking(move || read_history(&s2.store, month, &s2.cfg)).await;
    let rows = match rows {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "report: the history cannot be read");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let r = build(
        rows,
        |s| gaps.remove(s).unwrap_or_default(),
        month,
        now,
        &src.cfg,
    );
    let page = Page {
        base: Some("/report/".into()),
        now_ms: now,
    };
    let body = render(&r, &src.cfg, format, q.lang.as_deref(), &page);
    match format {
        Format::Html => Html(body).into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"wardgate-report-{month}.csv\""),
                ),
            ],
            body,
        )
            .into_response(),
    }
}
