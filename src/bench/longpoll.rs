//! Parked `/vm_startup` requests on raw sockets: the cheapest possible waiting agent, so the
//! figures measure the server's cost per parked request and not the client's.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the long-poll request; the returned socket is parked until the server answers.
pub async fn park(addr: SocketAddr, token: &str, host: &str) -> std::io::Result<TcpStream> {
    let body = format!("{{\"hostname\":\"{host}\"}}");
    let request = format!(
        "POST /vm_startup HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Waits for the answer's status line; returns the status code and when it arrived.
pub async fn answer(mut stream: TcpStream) -> std::io::Result<(u16, Instant)> {
    let mut buf = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    let at = Instant::now();
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP status line"))?;
    Ok((status, at))
}
