//! The harness end to end on a small data set: every measurement runs and reports what it
//! measured (the figures themselves are not checked: benchmarks, not timed assertions).

use std::process::Command;

#[test]
fn a_small_run_measures_everything_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let run = Command::new(env!("CARGO_BIN_EXE_mongoshift-bench"))
        .args(["--docs", "3000", "--doc-size", "400", "--lag-step", "1"])
        .args(["--lag-rates", "100,300", "--plan-collections", "20,40"])
        .args(["--repeat", "2"])
        .arg("--out")
        .arg(&out)
        // Nested `cargo build` would wait for the lock this test run holds; `cargo test
        // --workspace` has built both binaries already.
        .env_remove("CARGO")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("copy / ceiling"), "{stdout}");
    assert!(stdout.contains("targets:"), "{stdout}");

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["documents"], 3000);
    // The reported ceiling is the two measurements around the median round's copy, as one.
    assert_eq!(r["ceiling"]["documents"], 6000);
    assert_eq!(r["copy"]["rate"]["documents"], 3000);
    let small = r["small_copies"].as_array().unwrap();
    assert_eq!(small.len(), 2);
    for copy in small {
        assert_eq!(copy["rate"]["documents"], 300);
        assert!(copy["peak_rss"].as_u64().unwrap() > 1024 * 1024);
    }
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for round in rounds {
        assert_eq!(round["ceiling_before"]["documents"], 3000);
        assert_eq!(round["ceiling_after"]["documents"], 3000);
        assert_eq!(round["copy"]["rate"]["documents"], 3000);
        // Each part is a count of CPU ticks (10 ms): small ones may round to none.
        for part in ["ceiling_destination", "copy_source", "copy_destination"] {
            assert!(round["servers_cpu"][part].as_f64().is_some(), "{round}");
        }
        let stolen = round["servers_cpu"]["copy_stolen"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&stolen), "{round}");
    }
    // Over both rounds each server's CPU did count: the destination created and filled a
    // collection twice, the source answered two whole `apply` runs.
    for part in ["ceiling_destination", "copy_source", "copy_destination"] {
        let total: f64 = rounds
            .iter()
            .map(|round| round["servers_cpu"][part].as_f64().unwrap())
            .sum();
        assert!(total > 0.0, "{part}: {rounds:?}");
    }
    // The median round's figures, each from its own measurement: per million documents of
    // the round's copy (3,000) or its two ceilings (6,000).
    let by_process = &r["median_round_cpu_secs_per_million"];
    let median = rounds
        .iter()
        .find(|round| round["copy"] == r["copy"])
        .expect("the median round is one of the rounds");
    let per_million =
        |secs: &serde_json::Value, documents: f64| secs.as_f64().unwrap() * 1e6 / documents;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    let expected = [
        (
            "ceiling_destination",
            per_million(&median["servers_cpu"]["ceiling_destination"], 6000.0),
        ),
        (
            "copy_destination",
            per_million(&median["servers_cpu"]["copy_destination"], 3000.0),
        ),
        (
            "copy_source",
            per_million(&median["servers_cpu"]["copy_source"], 3000.0),
        ),
        (
            "copy_mongoshift",
            per_million(&median["copy"]["cpu_secs"], 3000.0),
        ),
    ];
    for (part, value) in expected {
        assert!(
            close(by_process[part].as_f64().unwrap(), value),
            "{part}: {by_process}"
        );
    }
    assert!(
        by_process["copy_mongoshift"].as_f64().unwrap() > 0.0,
        "{by_process}"
    );
    // Each round's ceiling after its copy is the next round's ceiling before.
    assert_eq!(rounds[0]["ceiling_after"], rounds[1]["ceiling_before"]);
    // Two runs of each: the medians are the means of their peaks.
    let mean_peak = |a: &serde_json::Value, b: &serde_json::Value| {
        (a["peak_rss"].as_u64().unwrap() + b["peak_rss"].as_u64().unwrap()) as f64 / 2.0
    };
    assert_eq!(r["peak_rss_small"], mean_peak(&small[0], &small[1]));
    assert_eq!(
        r["peak_rss_large"],
        mean_peak(&rounds[0]["copy"], &rounds[1]["copy"])
    );
    // The reported copy and ceiling are those of the round with the lower of the two ratios.
    let ratio = |round: &serde_json::Value| {
        let ceiling_docs = round["ceiling_before"]["documents"].as_f64().unwrap()
            + round["ceiling_after"]["documents"].as_f64().unwrap();
        let ceiling_secs = round["ceiling_before"]["secs"].as_f64().unwrap()
            + round["ceiling_after"]["secs"].as_f64().unwrap();
        round["copy"]["rate"]["docs_per_sec"].as_f64().unwrap() / (ceiling_docs / ceiling_secs)
    };
    let lower = if ratio(&rounds[0]) <= ratio(&rounds[1]) {
        &rounds[0]
    } else {
        &rounds[1]
    };
    assert_eq!(r["copy"], lower["copy"]);
    let target = &r["targets"][0];
    assert_eq!(target["name"], "copy rate / ceiling");
    assert_eq!(target["measured"], format!("{:.2}", ratio(lower)));
    assert!(r["copy"]["rate"]["bytes"].as_u64().unwrap() >= 3000 * 400);
    assert!(r["copy"]["cpu_secs"].as_f64().unwrap() > 0.0);
    assert!(r["copy"]["peak_rss"].as_u64().unwrap() > 1024 * 1024);
    assert_eq!(r["verify"]["verify"]["documents"], 3000);
    let lag = r["lag"].as_array().unwrap();
    assert!(!lag.is_empty());
    assert!(lag[0]["samples"].as_u64().unwrap() > 0);
    let plans: Vec<u64> = r["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["collections"].as_u64().unwrap())
        .collect();
    assert_eq!(plans, [20, 40]);
    match r["pymongo"].get("skipped") {
        Some(reason) => assert!(reason.as_str().unwrap().contains("pymongo"), "{reason}"),
        None => assert_eq!(r["pymongo"]["documents"], 3000),
    }
    assert_eq!(r["targets"].as_array().unwrap().len(), 5);
}
