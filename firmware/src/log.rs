//! Log lines on the console UART: `[   1234 ms] text`. The renode-manager and the tests read
//! them, so their wording is part of the firmware's interface (see `firmware/README.md`).

use core::cell::RefCell;
use core::fmt::{self, Write};

use critical_section::Mutex;

use crate::board::Console;
use crate::board::clock;
use crate::board::this::ConsoleUart;

static CONSOLE: Mutex<RefCell<Option<ConsoleUart>>> = Mutex::new(RefCell::new(None));

/// Routes log lines to `console`.
pub fn init(console: ConsoleUart) {
    critical_section::with(|cs| CONSOLE.borrow(cs).replace(Some(console)));
}

struct Line<'a>(&'a mut ConsoleUart);

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes one line with a timestamp.
pub fn line(args: fmt::Arguments<'_>) {
    let now = clock::now_ms();
    critical_section::with(|cs| {
        if let Some(console) = CONSOLE.borrow(cs).borrow_mut().as_mut() {
            let mut out = Line(console);
            let _ = write!(out, "[{now:>7} ms] ");
            let _ = out.write_fmt(args);
            let _ = out.write_str("\r\n");
        }
    });
}

/// `log!("format", args…)`: one line on the console.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
