#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::*;
use tokio::io::DuplexStream;
use tokio::net::TcpListener;

/// The board's end of the link, driven by hand over an in-process UART (a byte pipe; the
/// gateway side is a real TCP connection).
struct Board {
    link: Link,
    uart: DuplexStream,
    started: Instant,
}

impl Board {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sends what the link has, then takes what arrives within `for_ms`.
    async fn pump(&mut self, for_ms: u64) {
        let until = Instant::now() + Duration::from_millis(for_ms);
        let mut buf = [0u8; 1024];
        loop {
            let mut line = Vec::new();
            self.link.transmit(self.now(), &mut line);
            self.uart.write_all(&line).await.unwrap();
            match tokio::time::timeout_at(until, self.uart.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.link.receive(&buf[..n], self.now()),
                _ => return,
            }
        }
    }

    async fn next_event(&mut self) -> Option<LinkEvent> {
        for _ in 0..50 {
            if let Some(event) = self.link.event() {
                return Some(event);
            }
            self.pump(20).await;
        }
        None
    }
}

fn board_and_bridge(allowed: Vec<String>) -> (Board, Arc<UartLog>) {
    let (board_end, bridge_end) = tokio::io::duplex(4096);
    let log = Arc::new(UartLog::default());
    tokio::spawn(run(bridge_end, allowed, log.clone()));
    let board = Board {
        link: Link::new(),
        uart: board_end,
        started: Instant::now(),
    };
    (board, log)
}

#[test]
fn only_provisioned_endpoints_are_dialled_and_the_guest_host_is_loopback() {
    let allowed = vec!["10.0.2.2:4423".to_owned(), "192.0.2.7:9000".to_owned()];
    for (target, expected) in [
        ("10.0.2.2:4423", Some("127.0.0.1:4423")),
        ("192.0.2.7:9000", Some("192.0.2.7:9000")),
        ("10.0.2.2:22", None),
        ("127.0.0.1:4423", None),
        ("", None),
    ] {
        assert_eq!(
            resolve(target, &allowed).map(|a| a.to_string()).as_deref(),
            expected,
            "{target:?}"
        );
    }
}

#[tokio::test]
async fn bytes_cross_both_ways_after_the_bridge_answers_and_a_closed_gateway_is_a_close() {
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gateway.local_addr().unwrap().port();
    let target = format!("{HOST_FROM_GUEST}:{port}");
    let (mut board, log) = board_and_bridge(vec![target.clone()]);
    board.link.open_to(target.as_bytes());
    board.pump(10).await;
    let (mut server, _) = gateway.accept().await.unwrap();
    assert_eq!(board.next_event().await, Some(LinkEvent::Opened));
    // Board → gateway, more than one frame and more than one window.
    let hello: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    while written < hello.len() {
        written += board.link.write(&hello[written..]);
        board.pump(5).await;
    }
    let mut got = vec![0u8; hello.len()];
    let read = async {
        let mut at = 0;
        while at < got.len() {
            board.pump(5).await;
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(5), server.read(&mut got[at..])).await
            {
                at += n;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap();
    assert_eq!(got, hello);
    // Gateway → board.
    server.write_all(b"server flight").await.unwrap();
    let mut buf = [0u8; 64];
    let mut n = 0;
    for _ in 0..50 {
        board.pump(20).await;
        n = board.link.read(&mut buf);
        if n > 0 {
            break;
        }
    }
    assert_eq!(&buf[..n], b"server flight");
    // The gateway goes away: the board hears Close.
    drop(server);
    assert_eq!(board.next_event().await, Some(LinkEvent::Closed));
    assert!(
        log.lines()
            .iter()
            .any(|l| l.contains("the gateway closed the connection")),
        "{:?}",
        log.lines()
    );
}

#[tokio::test]
async fn a_board_asking_for_anything_else_or_a_dead_gateway_gets_close() {
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("{HOST_FROM_GUEST}:{closed_port}");
    let (mut board, log) = board_and_bridge(vec![dead.clone()]);
    board.link.open_to(b"10.0.2.2:22");
    assert_eq!(board.next_event().await, Some(LinkEvent::Closed));
    board.link.open_to(dead.as_bytes());
    assert_eq!(board.next_event().await, Some(LinkEvent::Closed));
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l.contains("refused \"10.0.2.2:22\"")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("connecting to {dead}"))),
        "{lines:?}"
    );
}
