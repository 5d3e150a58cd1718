//! The network: smoltcp over the board's NIC, an address from DHCP, and one TCP connection
//! at a time exposed as a blocking `embedded_io` stream for the TLS client.

use alloc::vec;
use core::cell::RefCell;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

use crate::board::clock;
use crate::board::lan9118::Lan9118;
use crate::log;

/// The receive window. It must stay below what the NIC's receive FIFO holds (about 10 KiB on
/// the LAN9118): a larger window lets the peer send more than the FIFO keeps between two
/// polls, and every dropped frame costs a retransmission timeout.
const TCP_RX_BUFFER: usize = 6 * 1024;
const TCP_TX_BUFFER: usize = 8 * 1024;
/// A read or write that makes no progress this long ends the connection.
const IO_TIMEOUT_MS: u64 = 30_000;

/// Why the network could not carry a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// No DHCP lease (yet).
    NoAddress,
    /// The peer refused or reset the connection, or it closed.
    Closed,
    /// No progress within the timeout.
    TimedOut,
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NetError::NoAddress => "no address yet",
            NetError::Closed => "connection closed",
            NetError::TimedOut => "timed out",
        })
    }
}

impl core::error::Error for NetError {}

impl embedded_io::Error for NetError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            NetError::NoAddress => embedded_io::ErrorKind::NotConnected,
            NetError::Closed => embedded_io::ErrorKind::ConnectionReset,
            NetError::TimedOut => embedded_io::ErrorKind::TimedOut,
        }
    }
}

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

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.nic.mac()
    }

    /// Moves packets; returns whether anything happened.
    pub fn poll(&mut self) -> bool {
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

    /// The address DHCP gave, once it has.
    pub fn address(&self) -> Option<Ipv4Cidr> {
        self.address
    }

    /// Opens a TCP connection to `ip:port`, waiting up to `timeout_ms` for it to establish.
    pub fn connect(&mut self, ip: Ipv4Address, port: u16, timeout_ms: u64) -> Result<(), NetError> {
        if self.address.is_none() {
            return Err(NetError::NoAddress);
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
            .map_err(|_| NetError::Closed)?;
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            self.poll();
            let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
            match socket.state() {
                tcp::State::Established => return Ok(()),
                tcp::State::Closed | tcp::State::TimeWait => return Err(NetError::Closed),
                _ => {}
            }
            if clock::now_ms() >= deadline {
                socket.abort();
                return Err(NetError::TimedOut);
            }
            idle();
        }
    }

    /// Drops the connection (a reset: the session above it is already over).
    pub fn abort(&mut self) {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).abort();
        self.poll();
    }

    /// Bytes received and not yet read.
    pub fn pending(&mut self) -> usize {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).recv_queue()
    }

    /// Whether the connection can still carry data.
    pub fn is_open(&mut self) -> bool {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).may_send()
    }

    /// Receive and transmit counters of the NIC.
    pub fn nic_stats(&self) -> crate::board::lan9118::NicStats {
        self.nic.stats()
    }
}

/// Waits for the next interrupt (SysTick, at most a millisecond).
pub fn idle() {
    cortex_m::asm::wfi();
}

/// The TCP connection as a blocking stream. It borrows the stack through a `RefCell` so the
/// main loop can still poll the network and check for input between reads.
pub struct TcpStream<'n> {
    net: &'n RefCell<Net>,
}

impl<'n> TcpStream<'n> {
    /// The connection [`Net::connect`] opened.
    pub fn new(net: &'n RefCell<Net>) -> Self {
        Self { net }
    }
}

impl embedded_io::ErrorType for TcpStream<'_> {
    type Error = NetError;
}

impl embedded_io::Read for TcpStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        let deadline = clock::now_ms() + IO_TIMEOUT_MS;
        loop {
            {
                let mut net = self.net.borrow_mut();
                net.poll();
                let handle = net.tcp;
                let socket = net.sockets.get_mut::<tcp::Socket>(handle);
                if socket.can_recv() {
                    let n = socket.recv_slice(buf).map_err(|_| NetError::Closed)?;
                    // Reading opens the window: tell the peer now.
                    net.poll();
                    return Ok(n);
                }
                if !socket.may_recv() {
                    return Err(NetError::Closed);
                }
            }
            if clock::now_ms() >= deadline {
                return Err(NetError::TimedOut);
            }
            idle();
        }
    }
}

impl embedded_io::Write for TcpStream<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        let deadline = clock::now_ms() + IO_TIMEOUT_MS;
        loop {
            {
                let mut net = self.net.borrow_mut();
                let handle = net.tcp;
                let socket = net.sockets.get_mut::<tcp::Socket>(handle);
                if !socket.may_send() {
                    return Err(NetError::Closed);
                }
                if socket.can_send() {
                    let n = socket.send_slice(buf).map_err(|_| NetError::Closed)?;
                    net.poll();
                    return Ok(n);
                }
                net.poll();
            }
            if clock::now_ms() >= deadline {
                return Err(NetError::TimedOut);
            }
            idle();
        }
    }

    fn flush(&mut self) -> Result<(), NetError> {
        // The bytes are in the socket's buffer; the main loop's polls send them.
        self.net.borrow_mut().poll();
        Ok(())
    }
}
