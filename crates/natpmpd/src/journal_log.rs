//! Log lines that the systemd journal files under their own priority.
//!
//! Under systemd, natpmpd's stderr is a stream to journald, which files every line at the
//! unit's default priority (info) unless the line begins with a syslog priority prefix such
//! as `<4>` (`SyslogLevelPrefix=`, on by default; sd-daemon(3)). Without the prefix a warning
//! was filed as info, and `journalctl -p warning -u natpmpd` showed nothing. systemd says
//! where the stream goes in `JOURNAL_STREAM` (`device:inode` of the stream, systemd.exec(5));
//! when it is stderr's, each line gets the prefix of its level and loses its timestamp, which
//! the journal keeps itself. On a terminal or a file, lines are as before.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the journal stream that `JOURNAL_STREAM` names.
pub fn stderr_is_journal() -> bool {
    let Ok(named) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer it is given and reads nothing else.
    if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    names_stream(&named, st.st_dev, st.st_ino)
}

/// Whether `JOURNAL_STREAM`'s `device:inode` is the file `dev`, `ino` (a stream inherited
/// by a child that redirected stderr elsewhere must not count).
fn names_stream(named: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = named.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority of a level: err, warning, info, debug (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Writes an event as `inner` does, after the priority prefix of its level.
pub struct PriorityPrefix<F>(pub F);

/// The format of a line on the journal: its priority, then the usual line without the
/// timestamp and without colour.
pub fn journal_format() -> PriorityPrefix<Format<Full, ()>> {
    PriorityPrefix(
        tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false),
    )
}

impl<S, N, F> FormatEvent<S, N> for PriorityPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[test]
    fn journal_stream_must_name_this_very_file() {
        assert!(names_stream("8:1234", 8, 1234));
        assert!(!names_stream("8:1234", 8, 1235), "another file");
        assert!(!names_stream("9:1234", 8, 1234), "another device");
        assert!(!names_stream("8", 8, 1234));
        assert!(!names_stream("", 8, 1234));
        assert!(!names_stream("x:y", 8, 1234));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_begins_with_the_priority_of_its_level() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(journal_format())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (line, (prefix, level)) in lines.iter().zip([
            ("<3>", "ERROR"),
            ("<4>", " WARN"),
            ("<6>", " INFO"),
            ("<7>", "DEBUG"),
        ]) {
            assert!(
                line.starts_with(&format!("{prefix}{level}")),
                "{line:?} should begin with {prefix}{level}"
            );
        }
    }
}
