//! `k2 healthcheck`: one GET of /health from a running K2, for a
//! container's HEALTHCHECK (the runtime image has no curl) and for probes.
//! Exit 0 on 200 (`ok` or `degraded`: the service still serves), 1 on
//! anything else; Docker reserves exit 2, so every failure here is 1.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;

use thiserror::Error;

use crate::cli::HealthcheckArgs;

#[derive(Debug, Error)]
enum HealthcheckError {
    #[error(transparent)]
    Config(#[from] k2::runtime::config::ConfigError),
    #[error("{addr}: not an address: {reason}")]
    Address { addr: String, reason: String },
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}: not an HTTP answer: {line:?}")]
    NotHttp { addr: SocketAddr, line: String },
    #[error("{addr}: /health answered {status_line:?}")]
    Unhealthy { addr: SocketAddr, status_line: String },
}

pub fn run(args: HealthcheckArgs) -> ExitCode {
    match check(&args) {
        Ok(addr) => {
            println!("k2 healthcheck: {addr} is healthy");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("k2 healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &HealthcheckArgs) -> Result<SocketAddr, HealthcheckError> {
    let addr = target(args)?;
    let io = |source| HealthcheckError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, args.timeout).map_err(io)?;
    stream.set_read_timeout(Some(args.timeout)).map_err(io)?;
    stream.set_write_timeout(Some(args.timeout)).map_err(io)?;
    // HTTP/1.0: the server closes after answering, so nothing waits on
    // keep-alive.
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: k2\r\n\r\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    let line = line.trim_end().to_owned();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some("200")) if v.starts_with("HTTP/") => Ok(addr),
        (Some(v), Some(_)) if v.starts_with("HTTP/") => Err(HealthcheckError::Unhealthy { addr, status_line: line }),
        _ => Err(HealthcheckError::NotHttp { addr, line }),
    }
}

/// `--addr`, or the configuration's `http.bind` with an unspecified address
/// (the service listens on every interface) taken as loopback.
fn target(args: &HealthcheckArgs) -> Result<SocketAddr, HealthcheckError> {
    if let Some(addr) = &args.addr {
        let bad = |reason: String| HealthcheckError::Address { addr: addr.clone(), reason };
        return addr.to_socket_addrs().map_err(|e| bad(e.to_string()))?.next().ok_or_else(|| bad("no address".into()));
    }
    let config = k2::runtime::config::Config::load(args.config.as_deref())?;
    Ok(local(config.http.bind))
}

fn local(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_address_is_asked_on_loopback() {
        assert_eq!(local("0.0.0.0:8080".parse().unwrap()), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(local("[::]:9000".parse().unwrap()), "[::1]:9000".parse().unwrap());
        assert_eq!(local("10.1.2.3:8080".parse().unwrap()), "10.1.2.3:8080".parse().unwrap());
    }
}
