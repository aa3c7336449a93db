//! The RFB parts of a broadcast fanned out to many viewers: the allocator is one client of
//! the broadcast seat's VNC stream (`connect`, `request`, `read_update`) and the server of
//! every viewer (`greet`, `drain_viewer`). Every viewer gets the same bytes, so the stream
//! uses one pixel format (noVNC's) and only stateless encodings (Raw, CopyRect, Hextile):
//! a viewer that joins at a full-screen update can decode everything after it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    MAX_SCREEN_PIXELS, Peer, RfbError, authenticate, greet_viewer, read_exact, read_u8, skip,
    skip_cut_text,
};

/// noVNC's SetPixelFormat message (core/rfb.js `RFB.messages.pixelFormat` at depth 24):
/// 32 bits per pixel, depth 24, little-endian, true colour, 8 bits per channel at shifts
/// 0 (red), 8 (green) and 16 (blue).
pub const NOVNC_SET_PIXEL_FORMAT: [u8; 20] = [
    0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0,
];
const BYTES_PER_PIXEL: usize = 4;

pub const RAW: i32 = 0;
pub const COPY_RECT: i32 = 1;
pub const HEXTILE: i32 = 5;

/// The longest desktop name kept from the server; the rest is skipped.
const MAX_NAME: u32 = 256;

/// The broadcast screen, as its ServerInit told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub name: Vec<u8>,
}

impl ServerInit {
    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// The most bytes one update may take: every pixel twice over in Hextile's worst case,
    /// so a broken server cannot make the allocator buffer without end.
    fn max_update(&self) -> usize {
        usize::try_from(self.area()).unwrap_or(usize::MAX) * (BYTES_PER_PIXEL + 1) * 2 + 65_536
    }
}

/// One FramebufferUpdate message, whole, as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub bytes: Vec<u8>,
    /// Its rectangles other than CopyRect cover the whole screen: a viewer can start here.
    pub full: bool,
}

/// The client side, over the agent's tunnel (RFB 3.8, security None): ClientInit (shared),
/// ServerInit, then noVNC's pixel format and the stateless encodings.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
) -> Result<ServerInit, RfbError> {
    // The tunnel offers security type None only: no password is ever sent.
    authenticate(server, "").await?;
    server.write_all(&[1]).await?;
    server.flush().await?;
    let mut head = [0; 24];
    read_exact(server, &mut head, Peer::Server).await?;
    let width = u16::from_be_bytes([head[0], head[1]]);
    let height = u16::from_be_bytes([head[2], head[3]]);
    let pixels = usize::from(width) * usize::from(height);
    if pixels == 0 || pixels > MAX_SCREEN_PIXELS {
        return Err(RfbError::ScreenSize(width, height));
    }
    let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
    let mut name = vec![0; name_len.min(MAX_NAME) as usize];
    read_exact(server, &mut name, Peer::Server).await?;
    skip(server, name_len.saturating_sub(MAX_NAME)).await?;

    let mut ask = Vec::with_capacity(36);
    ask.extend_from_slice(&NOVNC_SET_PIXEL_FORMAT);
    ask.extend_from_slice(&[2, 0, 0, 3]);
    for encoding in [COPY_RECT, HEXTILE, RAW] {
        ask.extend_from_slice(&encoding.to_be_bytes());
    }
    server.write_all(&ask).await?;
    server.flush().await?;
    Ok(ServerInit {
        width,
        height,
        name,
    })
}

/// A FramebufferUpdateRequest for the whole screen.
pub fn request(init: &ServerInit, incremental: bool) -> [u8; 10] {
    let [w0, w1] = init.width.to_be_bytes();
    let [h0, h1] = init.height.to_be_bytes();
    [3, u8::from(incremental), 0, 0, 0, 0, w0, w1, h0, h1]
}

/// The server's next FramebufferUpdate, read whole (bells and clipboard text before it are
/// skipped). Anything else, or an encoding other than Raw, CopyRect and Hextile, or a
/// rectangle outside the screen, is an error: the stream cannot be framed past it.
pub async fn read_update<S: AsyncRead + Unpin>(
    server: &mut S,
    init: &ServerInit,
) -> Result<Update, RfbError> {
    loop {
        match read_u8(server, Peer::Server).await? {
            0 => break,
            2 => {}
            3 => skip_cut_text(server).await?,
            // SetColourMapEntries (1) cannot come in true colour; the rest are unknown.
            other => return Err(RfbError::ServerMessage(other)),
        }
    }
    let mut bytes = vec![0; 4];
    read_exact(server, &mut bytes[1..], Peer::Server).await?;
    let rects = u16::from_be_bytes([bytes[2], bytes[3]]);
    let max = init.max_update();
    let mut covered = 0u64;
    for _ in 0..rects {
        let at = bytes.len();
        bytes.resize(at + 12, 0);
        read_exact(server, &mut bytes[at..], Peer::Server).await?;
        let head = &bytes[at..];
        let field = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
        let (x, y, w, h) = (field(0), field(2), field(4), field(6));
        let encoding = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if u32::from(x) + u32::from(w) > u32::from(init.width)
            || u32::from(y) + u32::from(h) > u32::from(init.height)
        {
            return Err(RfbError::OutsideScreen(init.width, init.height));
        }
        let (w, h) = (usize::from(w), usize::from(h));
        match encoding {
            RAW => append(server, &mut bytes, w * h * BYTES_PER_PIXEL, max).await?,
            COPY_RECT => append(server, &mut bytes, 4, max).await?,
            HEXTILE => hextile(server, &mut bytes, w, h, max).await?,
            other => return Err(RfbError::UpdateEncoding(other)),
        }
        if encoding != COPY_RECT {
            covered += (w * h) as u64;
        }
    }
    Ok(Update {
        bytes,
        full: covered >= init.area(),
    })
}

/// Reads `len` more bytes onto `bytes`, unless that makes the update longer than `max`.
async fn append<S: AsyncRead + Unpin>(
    server: &mut S,
    bytes: &mut Vec<u8>,
    len: usize,
    max: usize,
) -> Result<(), RfbError> {
    let at = bytes.len();
    if at + len > max {
        return Err(RfbError::UpdateTooLong(max));
    }
    bytes.resize(at + len, 0);
    read_exact(server, &mut bytes[at..], Peer::Server).await
}

/// A Hextile rectangle's data (RFC 6143 §7.7.4): 16×16 tiles, each a subencoding byte and
/// what it announces.
async fn hextile<S: AsyncRead + Unpin>(
    server: &mut S,
    bytes: &mut Vec<u8>,
    w: usize,
    h: usize,
    max: usize,
) -> Result<(), RfbError> {
    const TILE_RAW: u8 = 1;
    const BACKGROUND: u8 = 2;
    const FOREGROUND: u8 = 4;
    const ANY_SUBRECTS: u8 = 8;
    const SUBRECTS_COLOURED: u8 = 16;
    for ty in (0..h).step_by(16) {
        for tx in (0..w).step_by(16) {
            let (tw, th) = ((w - tx).min(16), (h - ty).min(16));
            append(server, bytes, 1, max).await?;
            let kind = bytes[bytes.len() - 1];
            if kind & TILE_RAW != 0 {
                append(server, bytes, tw * th * BYTES_PER_PIXEL, max).await?;
                continue;
            }
            let colours = usize::from(kind & BACKGROUND != 0) + usize::from(kind & FOREGROUND != 0);
            append(server, bytes, colours * BYTES_PER_PIXEL, max).await?;
            if kind & ANY_SUBRECTS != 0 {
                append(server, bytes, 1, max).await?;
                let count = usize::from(bytes[bytes.len() - 1]);
                let each = if kind & SUBRECTS_COLOURED != 0 {
                    BYTES_PER_PIXEL + 2
                } else {
                    2
                };
                append(server, bytes, count * each, max).await?;
            }
        }
    }
    Ok(())
}

/// The server side of a viewer's handshake (RFB 3.7 or 3.8, security None), up to and
/// including ServerInit: `init`'s size and name, in noVNC's pixel format.
pub async fn greet<V: AsyncRead + AsyncWrite + Unpin>(
    viewer: &mut V,
    init: &ServerInit,
) -> Result<(), RfbError> {
    greet_viewer(viewer).await?;
    let mut message = Vec::with_capacity(24 + init.name.len());
    message.extend_from_slice(&init.width.to_be_bytes());
    message.extend_from_slice(&init.height.to_be_bytes());
    message.extend_from_slice(&NOVNC_SET_PIXEL_FORMAT[4..]);
    message.extend_from_slice(&(init.name.len() as u32).to_be_bytes());
    message.extend_from_slice(&init.name);
    viewer.write_all(&message).await?;
    viewer.flush().await?;
    Ok(())
}

/// Reads what a viewer sends after its handshake, message by message, and drops all of it:
/// updates go out at the broadcast's pace and input never reaches the desktop. Ends when
/// the viewer closes; an error for a pixel format other than noVNC's (the only one served)
/// or a message that cannot be framed.
pub async fn drain_viewer<V: AsyncRead + Unpin>(viewer: &mut V) -> Result<(), RfbError> {
    let mut buf = vec![0u8; super::FILTER_BUF];
    let mut held = 0;
    let mut body = 0u32;
    loop {
        let read = viewer.read(&mut buf[held..]).await?;
        if read == 0 {
            return Ok(());
        }
        let filled = held + read;
        let mut at = 0;
        while at < filled {
            let rest = &buf[at..filled];
            if body > 0 {
                let take = rest.len().min(body as usize);
                body -= take as u32;
                at += take;
                continue;
            }
            let Some(frame) = super::frame(rest)? else {
                break;
            };
            if rest[0] == 0 && rest[..20] != NOVNC_SET_PIXEL_FORMAT {
                return Err(RfbError::ViewerPixelFormat);
            }
            body = frame.body;
            at += frame.head;
        }
        buf.copy_within(at..filled, 0);
        held = filled - at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(width: u16, height: u16) -> ServerInit {
        ServerInit {
            width,
            height,
            name: b"seat".to_vec(),
        }
    }

    fn rect(x: u16, y: u16, w: u16, h: u16, encoding: i32) -> Vec<u8> {
        [x, y, w, h]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .chain(encoding.to_be_bytes())
            .collect()
    }

    fn update(rects: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0, 0];
        m.extend_from_slice(&(rects.len() as u16).to_be_bytes());
        rects.iter().for_each(|r| m.extend_from_slice(r));
        m
    }

    async fn parse(bytes: &[u8], screen: &ServerInit) -> Result<Update, RfbError> {
        read_update(&mut &bytes[..], screen).await
    }

    /// A 20×20 Hextile rectangle: four tiles (16×16, 4×16, 16×4, 4×4) using each
    /// subencoding.
    fn hextile_rect() -> Vec<u8> {
        let mut r = rect(0, 0, 20, 20, HEXTILE);
        // Raw tile: 16×16 pixels.
        r.push(1);
        r.extend(std::iter::repeat_n(7, 16 * 16 * 4));
        // Background and foreground, two plain subrects.
        r.push(2 | 4 | 8);
        r.extend([1; 8]);
        r.extend([2, 0x00, 0x11, 0x22, 0x33]);
        // Coloured subrects, no colours before.
        r.push(8 | 16);
        r.extend([1, 9, 9, 9, 9, 0x01, 0x11]);
        // Nothing: the background goes on.
        r.push(0);
        r
    }

    #[tokio::test]
    async fn raw_copyrect_and_hextile_are_framed_to_the_last_byte() {
        let screen = init(20, 20);
        let mut raw = rect(0, 0, 2, 3, RAW);
        raw.extend([5; 2 * 3 * 4]);
        let mut copy = rect(4, 4, 2, 2, COPY_RECT);
        copy.extend([0, 0, 0, 0]);
        let message = update(&[raw.clone(), copy.clone(), hextile_rect()]);
        let mut stream = message.clone();
        // The next message must be left where it is.
        stream.extend([2, 0, 0, 0, 0]);
        let mut reader = &stream[..];
        let parsed = read_update(&mut reader, &screen).await.expect("parsed");
        assert_eq!(parsed.bytes, message);
        assert!(parsed.full, "the Hextile rectangle covers the screen");
        assert_eq!(reader, [2, 0, 0, 0, 0]);
        let partial = parse(&update(&[raw, copy]), &screen).await.expect("parsed");
        assert!(!partial.full, "6 pixels of 400 (CopyRect does not count)");
    }

    #[tokio::test]
    async fn bells_and_clipboard_before_an_update_are_skipped() {
        let screen = init(20, 20);
        let mut stream = vec![2, 3, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c'];
        let message = update(&[hextile_rect()]);
        stream.extend_from_slice(&message);
        assert_eq!(
            parse(&stream, &screen).await.expect("parsed").bytes,
            message
        );
    }

    #[tokio::test]
    async fn truncated_unknown_and_outside_updates_are_errors() {
        let screen = init(20, 20);
        let message = update(&[hextile_rect()]);
        for cut in [1, 3, 10, 17, message.len() - 1] {
            let err = parse(&message[..cut], &screen)
                .await
                .expect_err("truncated");
            assert!(
                matches!(err, RfbError::Closed(Peer::Server)),
                "{cut}: {err}"
            );
        }
        let tight = update(&[rect(0, 0, 4, 4, 7)]);
        let err = parse(&tight, &screen).await.expect_err("tight");
        assert!(matches!(err, RfbError::UpdateEncoding(7)), "{err}");
        let outside = update(&[rect(10, 0, 11, 1, RAW)]);
        let err = parse(&outside, &screen).await.expect_err("outside");
        assert!(matches!(err, RfbError::OutsideScreen(20, 20)), "{err}");
        let colour_map = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let err = parse(&colour_map, &screen).await.expect_err("colour map");
        assert!(matches!(err, RfbError::ServerMessage(1)), "{err}");
    }

    #[tokio::test]
    async fn an_update_longer_than_the_screen_allows_is_refused() {
        let screen = init(16, 16);
        let mut raw = rect(0, 0, 16, 16, RAW);
        raw.extend([0; 16 * 16 * 4]);
        // Each rectangle is inside the screen; together far more than it.
        let many: Vec<Vec<u8>> = std::iter::repeat_n(raw, 200).collect();
        let err = parse(&update(&many), &screen).await.expect_err("too long");
        assert!(matches!(err, RfbError::UpdateTooLong(_)), "{err}");
    }

    #[tokio::test]
    async fn a_viewer_is_greeted_with_the_broadcast_screen_in_novnc_format() {
        let screen = init(640, 480);
        let (mut ours, mut viewer) = tokio::io::duplex(1024);
        let serving = tokio::spawn(async move {
            greet(&mut ours, &screen).await?;
            drain_viewer(&mut ours).await
        });
        let mut got = [0; 12];
        viewer.read_exact(&mut got).await.expect("version");
        assert_eq!(&got, b"RFB 003.008\n");
        viewer.write_all(b"RFB 003.008\n").await.expect("version");
        let mut types = [0; 2];
        viewer.read_exact(&mut types).await.expect("types");
        assert_eq!(types, [1, 1]);
        viewer.write_all(&[1]).await.expect("none");
        let mut result = [0; 4];
        viewer.read_exact(&mut result).await.expect("result");
        assert_eq!(result, [0; 4]);
        viewer.write_all(&[0]).await.expect("client init");
        let mut server_init = [0; 28];
        viewer.read_exact(&mut server_init).await.expect("init");
        assert_eq!(server_init[..4], [2, 128, 1, 224]);
        assert_eq!(server_init[4..20], NOVNC_SET_PIXEL_FORMAT[4..]);
        assert_eq!(server_init[20..], [0, 0, 0, 4, b's', b'e', b'a', b't']);

        // What noVNC sends next, and input, is dropped; a split message stays framed.
        let mut sent = NOVNC_SET_PIXEL_FORMAT.to_vec();
        sent.extend([2, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 5]);
        sent.extend([3, 0, 0, 0, 0, 0, 2, 128, 1, 224]);
        sent.extend([5, 0, 0, 1, 0, 1, 6, 0, 0, 0, 0, 0, 0, 2, b'h']);
        viewer.write_all(&sent[..25]).await.expect("sent");
        viewer.write_all(&sent[25..]).await.expect("sent");
        viewer.write_all(b"i").await.expect("sent");
        // Another pixel format is refused.
        let mut other = NOVNC_SET_PIXEL_FORMAT;
        other[14] = 16;
        viewer.write_all(&other).await.expect("sent");
        let err = serving.await.expect("join").expect_err("refused");
        assert!(matches!(err, RfbError::ViewerPixelFormat), "{err}");
    }

    #[tokio::test]
    async fn the_client_asks_for_novnc_format_and_stateless_encodings_only() {
        let (mut ours, mut server) = tokio::io::duplex(1024);
        let connecting = tokio::spawn(async move { connect(&mut ours).await });
        server
            .write_all(b"RFB 003.008\n\x01\x01")
            .await
            .expect("sent");
        let mut answer = [0; 13];
        server.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"RFB 003.008\n\x01");
        server.write_all(&[0; 4]).await.expect("result");
        let mut shared = [0];
        server.read_exact(&mut shared).await.expect("client init");
        assert_eq!(shared, [1]);
        let mut server_init = vec![0, 32, 0, 16];
        server_init.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        server_init.extend([0, 0, 0, 2, b'x', b'y']);
        server.write_all(&server_init).await.expect("init");
        let got = connecting.await.expect("join").expect("connected");
        assert_eq!(
            got,
            ServerInit {
                width: 32,
                height: 16,
                name: b"xy".to_vec()
            }
        );
        let mut asked = [0; 36];
        server.read_exact(&mut asked).await.expect("asked");
        assert_eq!(asked[..20], NOVNC_SET_PIXEL_FORMAT);
        assert_eq!(
            asked[20..],
            [2, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0]
        );
        assert_eq!(request(&got, false), [3, 0, 0, 0, 0, 0, 0, 32, 0, 16]);
    }
}
