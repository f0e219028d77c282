//! The dashboard in a real browser (Debian's headless Chromium, `dev/services up chromium`):
//! the page loads, shows the pipeline's flow and connectors, its numbers and charts move while
//! a writer runs, and a screenshot of it is taken.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_integration_tests::{
    free_port, jsonl_sink, source_config, wait_for, workspace_root, Sluice, TestDb,
};

/// The page's DOM after its script ran (Chromium's virtual time lets the fetches finish).
fn dom(port: u16) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=6000",
            "--dump-dom",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("run chromium (dev/services up chromium installs it)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number a connector's card shows in its `class` field (`total`, `rate`, …).
fn number(dom: &str, connector: &str, class: &str) -> Option<String> {
    let card = &dom[dom.find(&format!("data-name=\"{connector}\""))?..];
    let card = &card[..card.find("</section>")?];
    let open = format!("<span class=\"{class}\"><b>");
    let field = &card[card.find(&open)? + open.len()..];
    Some(field[..field.find("</b>")?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_pipeline_and_its_numbers_move() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let port = free_port();
    let mut sluice = Sluice::new(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}{}",
        source_config(&db, ""),
        jsonl_sink("\"src.public.t\""),
    ));
    sluice.start();
    db.wait_for_streaming().await;
    db.exec("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g");
    wait_for(Duration::from_secs(30), "the first rows delivered", || {
        std::fs::read_to_string(sluice.path("out.jsonl")).is_ok_and(|t| t.lines().count() == 100)
    })
    .await;
    // Two samples (5 s apart) for the charts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first = dom(port);
    for name in [
        "data-name=\"src\"",
        "data-name=\"file\"",
        "data-node=\"topic:src.public.t\"",
        "RUNNING",
        "<polyline class=\"rate\"",
    ] {
        assert!(first.contains(name), "the page lacks {name}:\n{first}");
    }
    assert_eq!(
        number(&first, "file", "total").as_deref(),
        Some("100"),
        "{first}"
    );
    assert!(
        first.contains("<path d=\"M"),
        "the flow's edges are drawn: {first}"
    );

    // A writer runs: the numbers move.
    for batch in 0..8 {
        db.exec(&format!(
            "INSERT INTO t SELECT g, 'y' FROM generate_series({}, {}) g",
            1000 + batch * 100,
            1099 + batch * 100
        ));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    wait_for(
        Duration::from_secs(30),
        "the writer's rows delivered",
        || {
            std::fs::read_to_string(sluice.path("out.jsonl"))
                .is_ok_and(|t| t.lines().count() == 900)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = dom(port);
    assert_eq!(
        number(&second, "file", "total").as_deref(),
        Some("900"),
        "{second}"
    );
    assert_eq!(
        number(&second, "src", "total").as_deref(),
        Some("900"),
        "{second}"
    );

    // A screenshot, as docs/dashboard.png shows it.
    let shot = workspace_root().join("target/dashboard.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=6000",
            "--window-size=1280,820",
            &format!("--screenshot={}", shot.display()),
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    assert!(Path::new(&shot).exists());
    assert_eq!(sluice.stop(), Some(0));
}
