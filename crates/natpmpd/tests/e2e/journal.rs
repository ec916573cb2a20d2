//! End-to-end: natpmpd's log on the systemd journal. journald files each line of a service's
//! stderr under the syslog priority its `<N>` prefix names (`SyslogLevelPrefix=`, on by
//! default), and systemd tells the service where that stream is with `JOURNAL_STREAM`
//! (`device:inode`, systemd.exec(5)). The test sets `JOURNAL_STREAM` to the device and inode
//! of the file the real natpmpd's stderr goes to, as systemd would for its journal stream,
//! and reads what natpmpd wrote: every line begins with the priority of its level and carries
//! no timestamp (the journal keeps its own). When `JOURNAL_STREAM` names another file, the
//! lines are as on a terminal.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::lab::*;

/// Starts natpmpd with `JOURNAL_STREAM` set to its own stderr's file, or to another one;
/// returns its log once it answers.
fn log_with_journal_stream(names_stderr: bool) -> String {
    let mut lab = Lab::new();
    lab.write_config(&lab.config_text(&DaemonConfig::default()));
    // The log file natpmpd's stderr will be (truncated, not replaced, at the launch).
    let log = lab.log_path();
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let ino = if names_stderr {
        meta.ino()
    } else {
        meta.ino() + 1
    };
    let launch = Launch {
        env: vec![("JOURNAL_STREAM".into(), format!("{}:{ino}", meta.dev()))],
        ..Launch::default()
    };
    lab.spawn_daemon_launch(false, &launch);
    lab.wait_ready();
    assert!(
        lab.wait_log_count("listening on", 1, Duration::from_secs(5)),
        "{}",
        lab.daemon_log()
    );
    lab.stop_daemon(Duration::from_secs(5));
    lab.daemon_log()
}

#[test]
fn on_the_journal_each_line_begins_with_the_priority_of_its_level() {
    let log = log_with_journal_stream(true);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        assert!(
            ["<3>ERROR", "<4> WARN", "<6> INFO", "<7>DEBUG"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line without the priority of its level: {line:?}\n{log}"
        );
    }
    // The lab's external address is TEST-NET: natpmpd warns that it is not public.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4> WARN") && l.contains("private or reserved")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6> INFO") && l.contains("listening on")),
        "{log}"
    );
}

#[test]
fn when_the_journal_stream_is_another_file_lines_keep_their_timestamp() {
    let log = log_with_journal_stream(false);
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with('<') && line.starts_with("20"),
            "expected a timestamped line without a priority prefix: {line:?}\n{log}"
        );
    }
}
