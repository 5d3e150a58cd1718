//! The network of an Ethernet board: smoltcp over its NIC, an address from DHCP, and one TCP
//! connection at a time as the device's [`Transport`].

use alloc::format;
use alloc::string::String;
use alloc::vec;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use crate::board::clock;
use crate::board::lan9118::Lan9118;
use crate::log;
use crate::transport::{Endpoint, IO_TIMEOUT_MS, Transport, TransportError, idle};

/// The receive window. It must stay below what the NIC's receive FIFO holds (about 10 KiB on
/// the LAN9118): a larger window lets the peer send more than the FIFO keeps between two
/// polls, and every dropped frame costs a retransmission timeout.
const TCP_RX_BUFFER: usize = 6 * 1024;
const TCP_TX_BUFFER: usize = 8 * 1024;
/// The interface, its sockets and the NIC.
pub struct Net {
    iface: Interface,
    sockets: SocketSet<'static>,
    nic: Lan9118,
    dhcp: SocketHandle,
    tcp: SocketHandle,
    address: Option<Ipv4Cidr>,
    next_local_port: u16,
}

fn now() -> Instant {
    Instant::from_millis(clock::now_ms() as i64)
}

impl Net {
    /// Brings the interface up and starts DHCP.
    pub fn new(mut nic: Lan9118, random_seed: u64) -> Self {
        let mac = EthernetAddress(nic.mac());
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = random_seed;
        let iface = Interface::new(config, &mut nic, now());
        let [a, b, c, d, e, f] = mac.0;
        log!("net: lan9118 mac {a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}, waiting for dhcp");
        let mut sockets = SocketSet::new(vec![]);
        let dhcp = sockets.add(dhcpv4::Socket::new());
        let tcp = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BUFFER]),
        ));
        Self {
            iface,
            sockets,
            nic,
            dhcp,
            tcp,
            address: None,
            // An ephemeral port that differs from boot to boot, so a new connection is never
            // mistaken for the previous boot's.
            next_local_port: 49152 + (random_seed % 16000) as u16,
        }
    }

    fn poll_interface(&mut self) -> bool {
        let progressed = self.iface.poll(now(), &mut self.nic, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        let event = self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll();
        match event {
            Some(dhcpv4::Event::Configured(lease)) => {
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(lease.address));
                });
                match lease.router {
                    Some(router) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                    }
                    None => {
                        let _ = self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.address = Some(lease.address);
                log!(
                    "dhcp: lease {} router {}",
                    lease.address,
                    lease.router.unwrap_or(Ipv4Address::UNSPECIFIED)
                );
                true
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                let _ = self.iface.routes_mut().remove_default_ipv4_route();
                if self.address.take().is_some() {
                    log!("dhcp: lease lost");
                }
                true
            }
            None => progressed,
        }
    }
}

impl Transport for Net {
    fn poll(&mut self) -> bool {
        self.poll_interface()
    }

    fn is_ready(&self) -> bool {
        self.address.is_some()
    }

    fn connect(&mut self, endpoint: Endpoint, timeout_ms: u64) -> Result<(), TransportError> {
        let [a, b, c, d] = endpoint.ip;
        let (ip, port) = (Ipv4Address::new(a, b, c, d), endpoint.port);
        if self.address.is_none() {
            return Err(TransportError::NotReady);
        }
        let local_port = self.next_local_port;
        self.next_local_port = if local_port >= 65000 {
            49152
        } else {
            local_port + 1
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        socket.abort();
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)));
        socket.set_keep_alive(Some(Duration::from_millis(5_000)));
        socket
            .connect(self.iface.context(), (ip, port), local_port)
            .map_err(|_| TransportError::Closed)?;
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            self.poll_interface();
            let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
            match socket.state() {
                tcp::State::Established => return Ok(()),
                tcp::State::Closed | tcp::State::TimeWait => return Err(TransportError::Closed),
                _ => {}
            }
            if clock::now_ms() >= deadline {
                socket.abort();
                return Err(TransportError::TimedOut);
            }
            idle();
        }
    }

    fn abort(&mut self) {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).abort();
        self.poll_interface();
    }

    fn pending(&mut self) -> usize {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).recv_queue()
    }

    fn peek(&mut self, buf: &mut [u8]) -> usize {
        self.sockets
            .get_mut::<tcp::Socket>(self.tcp)
            .peek_slice(buf)
            .unwrap_or(0)
    }

    fn is_open(&mut self) -> bool {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).may_send()
    }

    fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.poll_interface();
        let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        if socket.can_recv() {
            let n = socket.recv_slice(buf).map_err(|_| TransportError::Closed)?;
            // Reading opens the window: tell the peer now.
            self.poll_interface();
            return Ok(n);
        }
        if !socket.may_recv() {
            return Err(TransportError::Closed);
        }
        Ok(0)
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        if !socket.may_send() {
            return Err(TransportError::Closed);
        }
        let n = if socket.can_send() {
            socket.send_slice(buf).map_err(|_| TransportError::Closed)?
        } else {
            0
        };
        self.poll_interface();
        Ok(n)
    }

    fn stats(&self) -> String {
        let stats = self.nic.stats();
        format!(
            "frames received {}, dropped {}, sent {}",
            stats.received, stats.dropped, stats.sent
        )
    }
}
