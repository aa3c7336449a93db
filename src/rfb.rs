//! The RFB (VNC) protocol where the agent stands between a browser's viewer (noVNC) and the
//! VNC server on the VM: the agent authenticates to the server with the seat's password
//! (VNC authentication, RFC 6143 §7.2.2), offers the viewer only security type None, so the
//! password never leaves the VM, and relays the session. For a peek it makes the session
//! view-only by dropping every input message the viewer sends.
//!
//! The handshakes do not time out on their own; callers bound them.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use des::Des;
use des::cipher::{Array, BlockCipherEncrypt, KeyInit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::secret_file;

pub mod fanout;

/// VNC authentication uses at most 8 characters of a password.
pub const PASSWORD_LEN: usize = 8;

/// The key every VNC implementation obfuscates password files with, in standard DES form
/// (d3des's `{23, 82, 107, 6, 35, 78, 88, 7}` with the bits of each byte reversed).
const PASSWD_FILE_KEY: [u8; 8] = [0xe8, 0x4a, 0xd6, 0x60, 0xc4, 0x72, 0x1a, 0xe0];

const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;

/// The longest failure reason kept from a server; the rest is not read.
const MAX_REASON: usize = 1024;
/// The most clipboard text a view-only viewer may send (dropped, but not forever).
pub const MAX_CUT_TEXT: u32 = 1 << 20;
/// The most encodings one SetEncodings may list in view-only mode (noVNC sends some 30).
const MAX_ENCODINGS: u16 = 1024;
/// The ExtendedMouseButtons pseudo-encoding: once a server accepts it, a PointerEvent with
/// the top button bit set is 7 bytes long instead of 6, which the filter could not tell
/// apart without parsing the server's updates; view-only mode therefore never asks for it.
const EXTENDED_MOUSE_BUTTONS: i32 = -316;
/// The buffer of the view-only direction; it must hold the longest message the filter
/// reads whole (a SetEncodings of MAX_ENCODINGS) with room to spare for reading.
const FILTER_BUF: usize = 8 * 1024;
/// What one read from the VNC server may take, on its way to the viewer.
const SERVER_READ_BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Server,
    Viewer,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Server => "VNC server",
            Peer::Viewer => "viewer",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    #[error("not an RFB server: it greeted with {greeting:?}")]
    NotRfbServer { greeting: String },
    #[error("not an RFB viewer: it answered {greeting:?}")]
    NotRfbViewer { greeting: String },
    #[error("the {peer} speaks RFB {version}, which LabLink does not")]
    UnsupportedVersion { peer: Peer, version: String },
    #[error("the {0} closed the connection during the handshake")]
    Closed(Peer),
    #[error("VNC server refused the connection: {0}")]
    ServerRefused(String),
    #[error(
        "the VNC server offers no security type LabLink speaks (2, VNC authentication, or 1, None); it offers {0:?}"
    )]
    NoSecurityType(Vec<u8>),
    #[error("VNC server refused the password{}", reason_suffix(.0))]
    PasswordRefused(String),
    #[error("the viewer chose security type {0}; LabLink offers only None (1)")]
    ViewerSecurity(u8),
    #[error("the viewer sent message type {0}, which view-only mode cannot frame")]
    UnknownMessage(u8),
    #[error(
        "the viewer sent {0} bytes of clipboard text; view-only mode takes at most {MAX_CUT_TEXT}"
    )]
    CutTextTooLong(u32),
    #[error("the viewer sent {0} encodings; view-only mode takes at most {MAX_ENCODINGS}")]
    TooManyEncodings(u16),
    #[error("the viewer did not finish the handshake within {0:?}")]
    ViewerTimeout(Duration),
    #[error(
        "the VNC server's screen is {0}×{1} pixels; a picture of it takes at most {MAX_SCREEN_PIXELS}"
    )]
    ScreenSize(u16, u16),
    #[error("the VNC server sent a rectangle in encoding {0}; LabLink asked for Raw (0) only")]
    Encoding(i32),
    #[error("the VNC server sent a rectangle outside its {0}×{1} screen")]
    OutsideScreen(u16, u16),
    #[error("the VNC server sent message type {0}, which LabLink does not read")]
    ServerMessage(u8),
    #[error(
        "the VNC server sent a rectangle in encoding {0}; a broadcast asks for Raw (0), CopyRect (1) and Hextile (5) only"
    )]
    UpdateEncoding(i32),
    #[error("the VNC server sent an update longer than {0} bytes, more than its screen can need")]
    UpdateTooLong(usize),
    #[error(
        "the viewer asked for a pixel format other than noVNC's, the only one a broadcast serves"
    )]
    ViewerPixelFormat,
    #[error("VNC connection: {0}")]
    Io(#[from] std::io::Error),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// A fresh random VNC password of `PASSWORD_LEN` letters and digits, from the thread's
/// CSPRNG (some 47 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..PASSWORD_LEN)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Writes `password` as a vncpasswd file (its first 8 bytes, zero-padded, DES-encrypted
/// with the fixed VNC key), as `x11vnc -rfbauth` and TigerVNC's `-rfbauth` read it; the
/// file is the owner's alone.
pub fn write_password_file(path: &Path, password: &str) -> Result<(), secret_file::WriteError> {
    let obfuscated = des_encrypt(PASSWD_FILE_KEY, password_block(password));
    secret_file::write_bytes(path, &obfuscated)
}

/// The password as VNC uses it: its first 8 bytes, zero-padded.
fn password_block(password: &str) -> [u8; 8] {
    let mut block = [0; 8];
    for (to, from) in block.iter_mut().zip(password.as_bytes()) {
        *to = *from;
    }
    block
}

fn des_encrypt(key: [u8; 8], block: [u8; 8]) -> [u8; 8] {
    let cipher = Des::new(&Array::from(key));
    let mut block = Array::from(block);
    cipher.encrypt_block(&mut block);
    block.into()
}

/// The answer to a VNC authentication challenge: both halves DES-encrypted with the
/// password as key, the bits of each key byte reversed (the d3des convention every VNC
/// implementation inherited).
fn challenge_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let key = password_block(password).map(u8::reverse_bits);
    let mut response = [0; 16];
    for (to, from) in response.chunks_exact_mut(8).zip(challenge.chunks_exact(8)) {
        let mut block = [0; 8];
        block.copy_from_slice(from);
        to.copy_from_slice(&des_encrypt(key, block));
    }
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    fn greeting(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }
}

/// `RFB xxx.yyy\n` → (xxx, yyy).
fn parse_greeting(greeting: &[u8; 12]) -> Option<(u16, u16)> {
    let number = |digits: &[u8]| -> Option<u16> {
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(digits).ok()?.parse().ok())?
    };
    if &greeting[..4] != b"RFB " || greeting[7] != b'.' || greeting[11] != b'\n' {
        return None;
    }
    Some((number(&greeting[4..7])?, number(&greeting[8..11])?))
}

/// The version to answer a server's greeting with: never above the server's (RFC 6143
/// §7.1.1), and 3.3 for the unofficial 3.4 to 3.6.
fn version_for_server(major: u16, minor: u16) -> Option<Version> {
    match (major, minor) {
        (3, 3..=6) => Some(Version::V3_3),
        (3, 7) => Some(Version::V3_7),
        (3, 8..) | (4.., _) => Some(Version::V3_8),
        _ => None,
    }
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

async fn read_exact<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut [u8],
    peer: Peer,
) -> Result<(), RfbError> {
    match from.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(RfbError::Closed(peer)),
        Err(e) => Err(e.into()),
    }
}

async fn read_u8<R: AsyncRead + Unpin>(from: &mut R, peer: Peer) -> Result<u8, RfbError> {
    let mut buf = [0];
    read_exact(from, &mut buf, peer).await?;
    Ok(buf[0])
}

async fn read_u32<R: AsyncRead + Unpin>(from: &mut R, peer: Peer) -> Result<u32, RfbError> {
    let mut buf = [0; 4];
    read_exact(from, &mut buf, peer).await?;
    Ok(u32::from_be_bytes(buf))
}

/// A server's failure reason: a u32 length and that many bytes, of which the first
/// `MAX_REASON` are read.
async fn read_reason<R: AsyncRead + Unpin>(server: &mut R) -> Result<String, RfbError> {
    let len = read_u32(server, Peer::Server).await?;
    let mut reason = vec![0; (len as usize).min(MAX_REASON)];
    read_exact(server, &mut reason, Peer::Server).await?;
    Ok(shown(&reason))
}

/// The client side of the handshake with the VNC server: the protocol version (3.3, 3.7
/// and 3.8 servers), the security type (VNC authentication with `password` if offered,
/// else None) and the security result. Leaves `server` just before ClientInit.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    password: &str,
) -> Result<(), RfbError> {
    let mut greeting = [0; 12];
    read_exact(server, &mut greeting, Peer::Server).await?;
    let (major, minor) = parse_greeting(&greeting).ok_or_else(|| RfbError::NotRfbServer {
        greeting: shown(&greeting),
    })?;
    let version = version_for_server(major, minor).ok_or_else(|| RfbError::UnsupportedVersion {
        peer: Peer::Server,
        version: format!("{major}.{minor}"),
    })?;
    server.write_all(version.greeting()).await?;
    server.flush().await?;

    let security = if version == Version::V3_3 {
        // The server decides; 0 means it refuses, with a reason.
        match read_u32(server, Peer::Server).await? {
            0 => return Err(RfbError::ServerRefused(read_reason(server).await?)),
            1 => SECURITY_NONE,
            2 => SECURITY_VNC_AUTH,
            other => {
                return Err(RfbError::NoSecurityType(
                    u8::try_from(other).map_or_else(|_| Vec::new(), |t| vec![t]),
                ));
            }
        }
    } else {
        let count = read_u8(server, Peer::Server).await?;
        if count == 0 {
            return Err(RfbError::ServerRefused(read_reason(server).await?));
        }
        let mut offered = vec![0; usize::from(count)];
        read_exact(server, &mut offered, Peer::Server).await?;
        let Some(chosen) = [SECURITY_VNC_AUTH, SECURITY_NONE]
            .into_iter()
            .find(|t| offered.contains(t))
        else {
            return Err(RfbError::NoSecurityType(offered));
        };
        server.write_all(&[chosen]).await?;
        server.flush().await?;
        chosen
    };

    if security == SECURITY_VNC_AUTH {
        let mut challenge = [0; 16];
        read_exact(server, &mut challenge, Peer::Server).await?;
        server
            .write_all(&challenge_response(password, &challenge))
            .await?;
        server.flush().await?;
    }

    // Before 3.8 there is no result after None, and no reason after a failure.
    let has_result = security == SECURITY_VNC_AUTH || version == Version::V3_8;
    if has_result && read_u32(server, Peer::Server).await? != 0 {
        let reason = if version == Version::V3_8 {
            read_reason(server).await?
        } else {
            String::new()
        };
        return Err(if security == SECURITY_VNC_AUTH {
            RfbError::PasswordRefused(reason)
        } else {
            RfbError::ServerRefused(reason)
        });
    }
    Ok(())
}

/// After `authenticate`: serves the viewer's handshake (RFB 3.7 or 3.8, security type None
/// only; a viewer that has not finished it within `handshake_limit` is dropped), passes its
/// ClientInit on to `server` with the shared flag always set (so another viewer never
/// disconnects the participant's), then relays both ways until either side closes. With
/// `view_only`, what the viewer sends to change the desktop (keys, pointer, clipboard,
/// resizes, xvp power actions) is dropped; see `frame`.
pub async fn serve<V, S>(
    mut viewer: V,
    mut server: S,
    view_only: bool,
    handshake_limit: Duration,
) -> Result<(), RfbError>
where
    V: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(handshake_limit, greet_viewer(&mut viewer))
        .await
        .map_err(|_| RfbError::ViewerTimeout(handshake_limit))??;
    server.write_all(&[1]).await?;
    server.flush().await?;
    relay(viewer, server, view_only).await
}

/// The viewer's side of the handshake, up to and including its ClientInit (whose shared
/// flag is read and replaced).
async fn greet_viewer<V: AsyncRead + AsyncWrite + Unpin>(viewer: &mut V) -> Result<(), RfbError> {
    viewer.write_all(Version::V3_8.greeting()).await?;
    viewer.flush().await?;
    let mut answer = [0; 12];
    read_exact(viewer, &mut answer, Peer::Viewer).await?;
    let version = match &answer {
        b"RFB 003.008\n" => Version::V3_8,
        b"RFB 003.007\n" => Version::V3_7,
        _ => {
            return Err(match parse_greeting(&answer) {
                Some((major, minor)) => RfbError::UnsupportedVersion {
                    peer: Peer::Viewer,
                    version: format!("{major}.{minor}"),
                },
                None => RfbError::NotRfbViewer {
                    greeting: shown(&answer),
                },
            });
        }
    };
    viewer.write_all(&[1, SECURITY_NONE]).await?;
    viewer.flush().await?;
    let chosen = read_u8(viewer, Peer::Viewer).await?;
    if chosen != SECURITY_NONE {
        if version == Version::V3_8 {
            let reason = b"LabLink offers only security type None";
            let mut failure = Vec::with_capacity(8 + reason.len());
            failure.extend_from_slice(&1u32.to_be_bytes());
            failure.extend_from_slice(&(reason.len() as u32).to_be_bytes());
            failure.extend_from_slice(reason);
            viewer.write_all(&failure).await?;
            viewer.flush().await?;
        }
        return Err(RfbError::ViewerSecurity(chosen));
    }
    if version == Version::V3_8 {
        viewer.write_all(&0u32.to_be_bytes()).await?;
        viewer.flush().await?;
    }
    read_u8(viewer, Peer::Viewer).await?;
    Ok(())
}

/// Both ways until either side closes (after the handshakes).
async fn relay<V, S>(viewer: V, server: S, view_only: bool) -> Result<(), RfbError>
where
    V: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut viewer_in, mut viewer_out) = tokio::io::split(viewer);
    let (mut server_in, mut server_out) = tokio::io::split(server);
    let down = async {
        // Framebuffer updates are the bulk of the traffic: fewer, larger writes than
        // `copy`'s 8 KiB.
        let mut server_in = tokio::io::BufReader::with_capacity(SERVER_READ_BUF, &mut server_in);
        tokio::io::copy_buf(&mut server_in, &mut viewer_out).await?;
        viewer_out.shutdown().await?;
        Ok::<_, RfbError>(())
    };
    let up = async {
        if view_only {
            copy_view_only(&mut viewer_in, &mut server_out).await?;
        } else {
            tokio::io::copy(&mut viewer_in, &mut server_out).await?;
        }
        server_out.shutdown().await?;
        Ok(())
    };
    let done = tokio::select! {
        done = down => done,
        done = up => done,
    };
    // A side that went away mid-write has closed, as much as one that sent EOF.
    match done {
        Err(RfbError::Io(e))
            if matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(())
        }
        done => done,
    }
}

async fn copy_view_only<R, W>(from: &mut R, to: &mut W) -> Result<(), RfbError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut filter = ViewOnly::new();
    let mut out = Vec::with_capacity(FILTER_BUF);
    loop {
        let read = from.read(filter.space()).await?;
        if read == 0 {
            return Ok(());
        }
        out.clear();
        // What came before a message the filter refuses still goes through.
        let filtered = filter.filter(read, &mut out);
        if !out.is_empty() {
            to.write_all(&out).await?;
            to.flush().await?;
        }
        filtered?;
    }
}

/// What the filter does with a message it has framed.
enum Action {
    Pass,
    Drop,
    /// A SetEncodings, read whole, passed without ExtendedMouseButtons.
    Encodings,
}

struct Frame {
    /// Bytes that must be buffered before the action is taken.
    head: usize,
    action: Action,
    /// Bytes after `head` that follow the same action as they arrive.
    body: u32,
}

impl Frame {
    fn fixed(len: usize, action: Action) -> Option<Frame> {
        Some(Frame {
            head: len,
            action,
            body: 0,
        })
    }
}

/// Frames the viewer's next message from `rest` (RFC 6143 §7.5 and the extensions noVNC
/// sends); `None` while its head is incomplete.
fn frame(rest: &[u8]) -> Result<Option<Frame>, RfbError> {
    let Some(&kind) = rest.first() else {
        return Ok(None);
    };
    let has = |len: usize| rest.len() >= len;
    Ok(match kind {
        // SetPixelFormat, FramebufferUpdateRequest, EnableContinuousUpdates.
        0 => Frame::fixed(20, Action::Pass),
        3 | 150 => Frame::fixed(10, Action::Pass),
        2 => {
            if !has(4) {
                return Ok(None);
            }
            let count = u16::from_be_bytes([rest[2], rest[3]]);
            if count > MAX_ENCODINGS {
                return Err(RfbError::TooManyEncodings(count));
            }
            Frame::fixed(4 + 4 * usize::from(count), Action::Encodings)
        }
        // Fence: flags and a payload of up to 255 bytes (64 by the spec).
        248 => has(9).then(|| Frame {
            head: 9,
            action: Action::Pass,
            body: u32::from(rest[8]),
        }),
        // KeyEvent, PointerEvent, xvp (shutdown, reboot, reset).
        4 => Frame::fixed(8, Action::Drop),
        5 => Frame::fixed(6, Action::Drop),
        250 => Frame::fixed(4, Action::Drop),
        // ClientCutText; a negative length is noVNC's extended clipboard.
        6 => {
            if !has(8) {
                return Ok(None);
            }
            let len = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]).unsigned_abs();
            if len > MAX_CUT_TEXT {
                return Err(RfbError::CutTextTooLong(len));
            }
            Some(Frame {
                head: 8,
                action: Action::Drop,
                body: len,
            })
        }
        // SetDesktopSize would resize the participant's screen: not a viewer's to change.
        251 => has(8).then(|| Frame {
            head: 8,
            action: Action::Drop,
            body: 16 * u32::from(rest[6]),
        }),
        // QEMU: only the extended KeyEvent (subtype 0) is framed.
        255 => match rest.get(1) {
            None => None,
            Some(0) => Frame::fixed(12, Action::Drop),
            Some(_) => return Err(RfbError::UnknownMessage(kind)),
        },
        _ => return Err(RfbError::UnknownMessage(kind)),
    }
    .filter(|frame| has(frame.head)))
}

/// The viewer→server direction of a view-only session, message by message, in one fixed
/// buffer: only a message's head is ever held (at most a SetEncodings); bodies pass or
/// are dropped as they arrive.
struct ViewOnly {
    buf: Box<[u8; FILTER_BUF]>,
    /// Bytes at the start of `buf` holding an incomplete head.
    held: usize,
    /// Bytes of the current message's body still to come, and whether they pass.
    body: u32,
    passing: bool,
}

impl ViewOnly {
    fn new() -> ViewOnly {
        ViewOnly {
            buf: Box::new([0; FILTER_BUF]),
            held: 0,
            body: 0,
            passing: false,
        }
    }

    /// Where the next read goes; never empty, as no head is longer than half the buffer.
    fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.held..]
    }

    /// Takes the `read` bytes just read into `space()`, appending what passes to `out`
    /// (on an error, what passed before the message it refuses).
    fn filter(&mut self, read: usize, out: &mut Vec<u8>) -> Result<(), RfbError> {
        let filled = self.held + read;
        let mut at = 0;
        while at < filled {
            let rest = &self.buf[at..filled];
            if self.body > 0 {
                let take = rest.len().min(self.body as usize);
                if self.passing {
                    out.extend_from_slice(&rest[..take]);
                }
                self.body -= take as u32;
                at += take;
                continue;
            }
            let Some(frame) = frame(rest)? else {
                break;
            };
            let head = &rest[..frame.head];
            match frame.action {
                Action::Pass => out.extend_from_slice(head),
                Action::Drop => {}
                Action::Encodings => {
                    let kept: Vec<&[u8]> = head[4..]
                        .chunks_exact(4)
                        .filter(|e| *e != EXTENDED_MOUSE_BUTTONS.to_be_bytes())
                        .collect();
                    out.extend_from_slice(&head[..2]);
                    out.extend_from_slice(&(kept.len() as u16).to_be_bytes());
                    kept.iter().for_each(|e| out.extend_from_slice(e));
                }
            }
            self.passing = matches!(frame.action, Action::Pass);
            self.body = frame.body;
            at += frame.head;
        }
        self.buf.copy_within(at..filled, 0);
        self.held = filled - at;
        Ok(())
    }
}

/// The largest screen `capture` takes a picture of (8K), so a broken server cannot make the
/// agent allocate gigabytes.
pub const MAX_SCREEN_PIXELS: usize = 7680 * 4320;

/// A picture: 3 bytes (red, green, blue) per pixel, row after row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: u16,
    pub height: u16,
    pub rgb: Vec<u8>,
}

/// After `authenticate`: a picture of the server's whole screen. Sends ClientInit (shared,
/// so no viewer is disconnected), asks for 32-bit true colour in Raw encoding and one full
/// (not incremental) update, and reads it; bells, clipboard and colour-map messages that
/// arrive first are skipped.
pub async fn capture<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
) -> Result<Screen, RfbError> {
    server.write_all(&[1]).await?;
    server.flush().await?;
    let mut init = [0; 24];
    read_exact(server, &mut init, Peer::Server).await?;
    let width = u16::from_be_bytes([init[0], init[1]]);
    let height = u16::from_be_bytes([init[2], init[3]]);
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
    skip(server, name_len).await?;
    let pixels = usize::from(width) * usize::from(height);
    if pixels == 0 || pixels > MAX_SCREEN_PIXELS {
        return Err(RfbError::ScreenSize(width, height));
    }

    let mut ask = Vec::with_capacity(38);
    // SetPixelFormat: 32 bits per pixel, depth 24, little-endian, true colour, 8 bits per
    // channel at shifts 16 (red), 8 (green) and 0 (blue): each pixel arrives as B, G, R, x.
    ask.extend_from_slice(&[
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ]);
    // SetEncodings: Raw only.
    ask.extend_from_slice(&[2, 0, 0, 1, 0, 0, 0, 0]);
    // FramebufferUpdateRequest: not incremental, the whole screen.
    ask.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
    ask.extend_from_slice(&width.to_be_bytes());
    ask.extend_from_slice(&height.to_be_bytes());
    server.write_all(&ask).await?;
    server.flush().await?;

    let mut rgb = vec![0; pixels * 3];
    loop {
        match read_u8(server, Peer::Server).await? {
            0 => break,
            // SetColourMapEntries: padding, first colour, count, then 6 bytes per colour.
            1 => {
                let mut head = [0; 5];
                read_exact(server, &mut head, Peer::Server).await?;
                skip(
                    server,
                    6 * u32::from(u16::from_be_bytes([head[3], head[4]])),
                )
                .await?;
            }
            // Bell.
            2 => {}
            3 => skip_cut_text(server).await?,
            other => return Err(RfbError::ServerMessage(other)),
        }
    }
    let mut head = [0; 3];
    read_exact(server, &mut head, Peer::Server).await?;
    let rects = u16::from_be_bytes([head[1], head[2]]);
    let mut row = Vec::new();
    for _ in 0..rects {
        let mut rect = [0; 12];
        read_exact(server, &mut rect, Peer::Server).await?;
        let at = |i: usize| usize::from(u16::from_be_bytes([rect[i], rect[i + 1]]));
        let (x, y, w, h) = (at(0), at(2), at(4), at(6));
        let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
        if encoding != 0 {
            return Err(RfbError::Encoding(encoding));
        }
        if x + w > usize::from(width) || y + h > usize::from(height) {
            return Err(RfbError::OutsideScreen(width, height));
        }
        row.resize(w * 4, 0);
        for line in y..y + h {
            read_exact(server, &mut row, Peer::Server).await?;
            let start = (line * usize::from(width) + x) * 3;
            for (to, from) in rgb[start..start + w * 3]
                .chunks_exact_mut(3)
                .zip(row.chunks_exact(4))
            {
                to.copy_from_slice(&[from[2], from[1], from[0]]);
            }
        }
    }
    Ok(Screen { width, height, rgb })
}

/// Reads and drops the rest of a ServerCutText message (its type read): padding, then a
/// length and the text.
async fn skip_cut_text<R: AsyncRead + Unpin>(server: &mut R) -> Result<(), RfbError> {
    let mut pad = [0; 3];
    read_exact(server, &mut pad, Peer::Server).await?;
    let len = read_u32(server, Peer::Server).await?;
    if len > MAX_CUT_TEXT {
        return Err(RfbError::CutTextTooLong(len));
    }
    skip(server, len).await
}

/// Reads and drops `len` bytes.
async fn skip<R: AsyncRead + Unpin>(from: &mut R, len: u32) -> Result<(), RfbError> {
    let skipped = tokio::io::copy(&mut from.take(u64::from(len)), &mut tokio::io::sink()).await?;
    if skipped < u64::from(len) {
        return Err(RfbError::Closed(Peer::Server));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    const PASSWORD: &str = "Secr3t!x";
    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    /// `openssl enc -des-ecb -nopad -K caa6c64ecc2e841e` (PASSWORD, each byte's bits
    /// reversed) of CHALLENGE: computed outside this code.
    const RESPONSE: [u8; 16] = [
        0x16, 0x86, 0x0a, 0x9a, 0x74, 0xbc, 0x7b, 0x89, 0x7c, 0x6a, 0x7f, 0x03, 0x36, 0xcb, 0x51,
        0xc2,
    ];

    #[test]
    fn passwords_are_eight_fresh_letters_or_digits() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_password_file_is_what_vncpasswd_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwd");
        // `printf password | vncpasswd -f`, and `printf pass | vncpasswd -f` (zero-padded).
        for (password, expected) in [
            ("password", [0xdb, 0xd8, 0x3c, 0xfd, 0x72, 0x7a, 0x14, 0x58]),
            ("pass", [0x25, 0x62, 0xd2, 0x97, 0x9f, 0x13, 0xa7, 0x43]),
            (
                "password and more",
                [0xdb, 0xd8, 0x3c, 0xfd, 0x72, 0x7a, 0x14, 0x58],
            ),
        ] {
            write_password_file(&path, password).expect("write");
            assert_eq!(std::fs::read(&path).expect("read"), expected, "{password}");
        }
    }

    #[test]
    fn greetings_are_parsed_and_answered_with_a_version_we_speak() {
        let version = |g: &[u8; 12]| parse_greeting(g).and_then(|(a, b)| version_for_server(a, b));
        assert_eq!(version(b"RFB 003.003\n"), Some(Version::V3_3));
        assert_eq!(version(b"RFB 003.005\n"), Some(Version::V3_3));
        assert_eq!(version(b"RFB 003.007\n"), Some(Version::V3_7));
        assert_eq!(version(b"RFB 003.008\n"), Some(Version::V3_8));
        assert_eq!(version(b"RFB 003.889\n"), Some(Version::V3_8));
        assert_eq!(version(b"RFB 005.000\n"), Some(Version::V3_8));
        assert_eq!(version(b"RFB 002.000\n"), None);
        assert_eq!(parse_greeting(b"HTTP/1.1 400"), None);
        assert_eq!(parse_greeting(b"RFB 00a.008\n"), None);
    }

    /// Plays a VNC server speaking RFB 3.`minor` that offers None and VNC authentication
    /// and expects RESPONSE. Returns the byte the client sent after a success (its
    /// ClientInit), or `None` after refusing.
    async fn vnc_auth_server(mut s: DuplexStream, minor: u8) -> Option<u8> {
        let greeting = format!("RFB 003.00{minor}\n");
        s.write_all(greeting.as_bytes()).await.expect("greet");
        let mut answer = [0; 12];
        s.read_exact(&mut answer).await.expect("version");
        assert_eq!(
            answer,
            greeting.as_bytes(),
            "answered with the server's version"
        );
        if minor == 3 {
            s.write_all(&2u32.to_be_bytes()).await.expect("type");
        } else {
            s.write_all(&[2, SECURITY_NONE, SECURITY_VNC_AUTH])
                .await
                .expect("types");
            let mut chosen = [0];
            s.read_exact(&mut chosen).await.expect("choice");
            assert_eq!(chosen, [SECURITY_VNC_AUTH], "VNC authentication preferred");
        }
        s.write_all(&CHALLENGE).await.expect("challenge");
        let mut response = [0; 16];
        s.read_exact(&mut response).await.expect("response");
        if response == RESPONSE {
            s.write_all(&0u32.to_be_bytes()).await.expect("result");
            let mut init = [0];
            s.read_exact(&mut init).await.expect("ClientInit");
            Some(init[0])
        } else {
            s.write_all(&1u32.to_be_bytes()).await.expect("result");
            if minor == 8 {
                let reason = b"Authentication failure";
                s.write_all(&(reason.len() as u32).to_be_bytes())
                    .await
                    .expect("len");
                s.write_all(reason).await.expect("reason");
            }
            None
        }
    }

    #[tokio::test]
    async fn the_password_is_accepted_by_3_3_3_7_and_3_8_servers() {
        for minor in [3, 7, 8] {
            // Past 8 characters a password does not count.
            for password in [PASSWORD, "Secr3t!x and then some"] {
                let (mut client, server) = duplex(64);
                let server = tokio::spawn(vnc_auth_server(server, minor));
                authenticate(&mut client, password)
                    .await
                    .unwrap_or_else(|e| panic!("3.{minor}: {e}"));
                client.write_all(&[1]).await.expect("ClientInit");
                assert_eq!(server.await.expect("server"), Some(1), "3.{minor}");
            }
        }
    }

    #[tokio::test]
    async fn a_wrong_password_is_refused_without_being_shown() {
        for minor in [3, 7, 8] {
            let (mut client, server) = duplex(64);
            let server = tokio::spawn(vnc_auth_server(server, minor));
            let e = authenticate(&mut client, "Secr3t!y")
                .await
                .expect_err("wrong password");
            assert!(matches!(e, RfbError::PasswordRefused(_)), "3.{minor}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with("VNC server refused the password"),
                "{shown}"
            );
            assert!(!shown.contains("Secr3t"), "{shown}");
            if minor == 8 {
                assert!(shown.ends_with(": Authentication failure"), "{shown}");
            }
            assert_eq!(server.await.expect("server"), None);
        }
    }

    /// A server's side of a handshake: writes `script` and collects what the client sends
    /// until it closes.
    async fn scripted(mut s: DuplexStream, script: Vec<u8>) -> Vec<u8> {
        s.write_all(&script).await.expect("script");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        got
    }

    #[tokio::test]
    async fn a_server_that_offers_only_none_is_accepted() {
        // 3.8: types [None], result OK; 3.3: type None, no result.
        let mut v38 = b"RFB 003.008\n".to_vec();
        v38.extend_from_slice(&[1, SECURITY_NONE, 0, 0, 0, 0]);
        let mut v33 = b"RFB 003.003\n".to_vec();
        v33.extend_from_slice(&1u32.to_be_bytes());
        for (script, sent) in [
            (v38, b"RFB 003.008\n\x01".to_vec()),
            (v33, b"RFB 003.003\n".to_vec()),
        ] {
            let (mut client, server) = duplex(64);
            let server = tokio::spawn(scripted(server, script));
            authenticate(&mut client, PASSWORD).await.expect("None");
            drop(client);
            assert_eq!(server.await.expect("server"), sent);
        }
    }

    #[tokio::test]
    async fn handshake_failures_say_what_failed() {
        let mut refused = b"RFB 003.008\n\x00".to_vec();
        refused.extend_from_slice(&27u32.to_be_bytes());
        refused.extend_from_slice(b"Too many security failures");
        refused.push(b'\n');
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"HTTP/1.1 400 Bad Request\r\n".to_vec(),
                "not an RFB server: it greeted with \"HTTP/1.1 400\"",
            ),
            (
                b"RFB 002.002\n".to_vec(),
                "the VNC server speaks RFB 2.2, which LabLink does not",
            ),
            (
                refused,
                "VNC server refused the connection: Too many security failures",
            ),
            (
                b"RFB 003.008\n\x02\x10\x13".to_vec(),
                "the VNC server offers no security type LabLink speaks (2, VNC authentication, or 1, None); it offers [16, 19]",
            ),
            (
                b"RFB 003.008\n\x01".to_vec(),
                "the VNC server closed the connection during the handshake",
            ),
        ];
        for (script, expected) in cases {
            let (mut client, mut server) = duplex(1024);
            server.write_all(&script).await.expect("script");
            // Closed for writing only: the client's answers still fit in the pipe.
            server.shutdown().await.expect("shutdown");
            let e = authenticate(&mut client, PASSWORD)
                .await
                .expect_err(expected);
            assert_eq!(e.to_string(), expected);
        }
    }

    /// Runs `serve` between a viewer end and an (already authenticated) server end.
    fn start_serve(
        view_only: bool,
        capacity: usize,
    ) -> (
        DuplexStream,
        DuplexStream,
        tokio::task::JoinHandle<Result<(), RfbError>>,
    ) {
        let (viewer, viewer_side) = duplex(capacity);
        let (server, server_side) = duplex(capacity);
        let relay = tokio::spawn(serve(
            viewer_side,
            server_side,
            view_only,
            Duration::from_secs(30),
        ));
        (viewer, server, relay)
    }

    /// The viewer's handshake as noVNC does it at RFB 3.`minor`, asking not to share.
    async fn viewer_handshake(viewer: &mut DuplexStream, minor: u8) {
        let mut greeting = [0; 12];
        viewer.read_exact(&mut greeting).await.expect("greeting");
        assert_eq!(&greeting, b"RFB 003.008\n");
        viewer
            .write_all(format!("RFB 003.00{minor}\n").as_bytes())
            .await
            .expect("version");
        let mut types = [0; 2];
        viewer.read_exact(&mut types).await.expect("types");
        assert_eq!(types, [1, SECURITY_NONE], "only None is offered");
        viewer.write_all(&[SECURITY_NONE]).await.expect("choice");
        if minor == 8 {
            let mut result = [0; 4];
            viewer.read_exact(&mut result).await.expect("result");
            assert_eq!(result, [0; 4]);
        }
        viewer.write_all(&[0]).await.expect("ClientInit");
    }

    #[tokio::test]
    async fn viewers_at_3_7_and_3_8_are_served_and_always_share() {
        for minor in [7, 8] {
            let (mut viewer, mut server, relay) = start_serve(false, 64);
            viewer_handshake(&mut viewer, minor).await;
            let mut init = [0];
            server.read_exact(&mut init).await.expect("ClientInit");
            assert_eq!(init, [1], "3.{minor}: shared flag forced");
            // The first bytes the viewer gets after its ClientInit are the server's.
            server.write_all(b"ServerInit").await.expect("write");
            let mut got = [0; 10];
            viewer.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ServerInit", "3.{minor}");
            // Without view-only, input passes.
            viewer
                .write_all(&[4, 1, 0, 0, 0, 0, 0, 0x61])
                .await
                .expect("key");
            let mut key = [0; 8];
            server.read_exact(&mut key).await.expect("read");
            assert_eq!(key, [4, 1, 0, 0, 0, 0, 0, 0x61]);
            drop(viewer);
            relay.await.expect("join").expect("relay");
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.expect("closed");
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn a_viewer_leaving_mid_update_ends_the_session_cleanly() {
        // The relay sees the viewer's EOF or a broken pipe first, by chance: often enough
        // that both are seen.
        for _ in 0..20 {
            let (mut viewer, mut server, relay) = start_serve(true, 64);
            viewer_handshake(&mut viewer, 8).await;
            let mut init = [0];
            server.read_exact(&mut init).await.expect("ClientInit");
            let updates = tokio::spawn(async move {
                let screen = [7; 1024];
                while server.write_all(&screen).await.is_ok() {}
            });
            let mut some = [0; 100];
            viewer.read_exact(&mut some).await.expect("update");
            drop(viewer);
            relay.await.expect("join").expect("a clean end");
            updates.await.expect("server");
        }
    }

    #[tokio::test]
    async fn a_viewer_that_wants_a_password_or_an_old_version_is_turned_away() {
        let (mut viewer, _server, relay) = start_serve(false, 64);
        let mut greeting = [0; 12];
        viewer.read_exact(&mut greeting).await.expect("greeting");
        viewer.write_all(b"RFB 003.008\n").await.expect("version");
        let mut types = [0; 2];
        viewer.read_exact(&mut types).await.expect("types");
        viewer
            .write_all(&[SECURITY_VNC_AUTH])
            .await
            .expect("choice");
        let mut failure = Vec::new();
        viewer.read_to_end(&mut failure).await.expect("failure");
        assert_eq!(&failure[..4], &1u32.to_be_bytes());
        assert_eq!(&failure[8..], b"LabLink offers only security type None");
        let e = relay.await.expect("join").expect_err("refused");
        assert!(matches!(e, RfbError::ViewerSecurity(2)), "{e}");

        let (mut viewer, _server, relay) = start_serve(false, 64);
        viewer.read_exact(&mut greeting).await.expect("greeting");
        viewer.write_all(b"RFB 003.003\n").await.expect("version");
        let e = relay.await.expect("join").expect_err("3.3");
        assert_eq!(
            e.to_string(),
            "the viewer speaks RFB 3.3, which LabLink does not"
        );
    }

    // Messages as noVNC sends them.
    const FB_UPDATE_REQUEST: [u8; 10] = [3, 1, 0, 0, 0, 0, 4, 0, 3, 0];
    const KEY_EVENT: [u8; 8] = [4, 1, 0, 0, 0, 0, 0xff, 0x0d];
    const POINTER_EVENT: [u8; 6] = [5, 1, 0, 10, 0, 20];

    fn set_encodings(encodings: &[i32]) -> Vec<u8> {
        let mut m = vec![2, 0];
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        m
    }

    fn cut_text(len: i32, text: &[u8]) -> Vec<u8> {
        let mut m = vec![6, 0, 0, 0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(text);
        m
    }

    /// Every kind of message noVNC sends, and what view-only mode passes of them.
    fn mixed_stream() -> (Vec<u8>, Vec<u8>) {
        let set_pixel_format = [
            0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0,
        ];
        let fence = [248, 0, 0, 0, 0x80, 0, 0, 3, 3, 7, 8, 9];
        let continuous = [150, 1, 0, 0, 0, 0, 4, 0, 3, 0];
        let qemu_key = [255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e];
        let mut desktop_size = vec![251, 0, 4, 0, 3, 0, 1, 0];
        desktop_size.extend_from_slice(&[0; 16]);
        let xvp = [250, 0, 1, 2];
        let extended_clipboard = cut_text(-6, b"\x01\x00\x00\x01zz");

        let mut stream = Vec::new();
        let mut passed = Vec::new();
        let mut both = |m: &[u8]| {
            stream.extend_from_slice(m);
            passed.extend_from_slice(m);
        };
        both(&set_pixel_format);
        both(&FB_UPDATE_REQUEST);
        both(&fence);
        both(&continuous);
        stream.extend_from_slice(&set_encodings(&[7, EXTENDED_MOUSE_BUTTONS, 0, -223]));
        passed.extend_from_slice(&set_encodings(&[7, 0, -223]));
        for dropped in [
            &KEY_EVENT[..],
            &POINTER_EVENT,
            &cut_text(5, b"hello"),
            &extended_clipboard,
            &qemu_key,
            &desktop_size,
            &xvp,
        ] {
            stream.extend_from_slice(dropped);
        }
        stream.extend_from_slice(&FB_UPDATE_REQUEST);
        passed.extend_from_slice(&FB_UPDATE_REQUEST);
        (stream, passed)
    }

    fn filter_in_chunks(stream: &[u8], cuts: &[usize]) -> Result<Vec<u8>, RfbError> {
        let mut filter = ViewOnly::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&stream.len()]) {
            let chunk = &stream[from..to];
            filter.space()[..chunk.len()].copy_from_slice(chunk);
            filter.filter(chunk.len(), &mut out)?;
            from = to;
        }
        Ok(out)
    }

    #[test]
    fn view_only_passes_the_same_bytes_however_the_stream_is_cut() {
        let (stream, passed) = mixed_stream();
        assert_eq!(filter_in_chunks(&stream, &[]).expect("whole"), passed);
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            filter_in_chunks(&stream, &every_byte).expect("bytewise"),
            passed
        );
        for a in 1..stream.len() {
            for b in a..stream.len() {
                assert_eq!(
                    filter_in_chunks(&stream, &[a, b]).expect("cut"),
                    passed,
                    "cut at {a} and {b}"
                );
            }
        }
    }

    #[test]
    fn view_only_refuses_what_it_cannot_frame_or_bound() {
        let e = filter_in_chunks(&[3, 0, 0, 0, 0, 0, 0, 1, 0, 1, 77], &[]).expect_err("77");
        assert!(matches!(e, RfbError::UnknownMessage(77)), "{e}");
        let e = filter_in_chunks(&[255, 1, 0, 0], &[]).expect_err("QEMU audio");
        assert!(matches!(e, RfbError::UnknownMessage(255)), "{e}");
        let too_long = MAX_CUT_TEXT as i32 + 1;
        for len in [too_long, -too_long] {
            let e = filter_in_chunks(&cut_text(len, b""), &[]).expect_err("long");
            assert!(matches!(e, RfbError::CutTextTooLong(_)), "{e}");
        }
        let e = filter_in_chunks(&[2, 0, 0x04, 0x01], &[]).expect_err("encodings");
        assert!(matches!(e, RfbError::TooManyEncodings(1025)), "{e}");
        // At the limits: kept whole, dropped in pieces.
        let most = set_encodings(&vec![7; usize::from(MAX_ENCODINGS)]);
        assert_eq!(filter_in_chunks(&most, &[1]).expect("encodings"), most);
        let mut long = cut_text(MAX_CUT_TEXT as i32, &vec![b'a'; MAX_CUT_TEXT as usize]);
        long.extend_from_slice(&FB_UPDATE_REQUEST);
        let cuts: Vec<usize> = (1..long.len()).step_by(FILTER_BUF / 2 + 3).collect();
        assert_eq!(
            filter_in_chunks(&long, &cuts).expect("cut text"),
            FB_UPDATE_REQUEST
        );
    }

    #[tokio::test]
    async fn a_view_only_session_drops_input_and_passes_the_screen() {
        // A 5-byte pipe: the relay reads every message in pieces.
        let (mut viewer, mut server, relay) = start_serve(true, 5);
        viewer_handshake(&mut viewer, 8).await;
        let mut init = [0];
        server.read_exact(&mut init).await.expect("ClientInit");
        assert_eq!(init, [1]);

        let screen: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let expected_screen = screen.clone();
        let (mut viewer_in, mut viewer_out) = tokio::io::split(viewer);
        let (mut server_in, mut server_out) = tokio::io::split(server);
        let (stream, passed) = mixed_stream();
        let send = tokio::spawn(async move {
            viewer_out.write_all(&stream).await.expect("input");
            viewer_out
        });
        let updates = tokio::spawn(async move {
            server_out.write_all(&screen).await.expect("screen");
        });
        let input = tokio::spawn(async move {
            let mut got = Vec::new();
            server_in.read_to_end(&mut got).await.expect("input");
            got
        });
        let mut got_screen = vec![0; expected_screen.len()];
        viewer_in.read_exact(&mut got_screen).await.expect("screen");
        assert!(got_screen == expected_screen, "server bytes unchanged");
        updates.await.expect("server");
        // The viewer leaving ends the session, once its input is through.
        let mut viewer_out = send.await.expect("viewer");
        viewer_out.shutdown().await.expect("close");
        assert_eq!(input.await.expect("server"), passed);
        relay.await.expect("join").expect("relay");
    }

    #[tokio::test]
    async fn a_view_only_session_closes_on_what_it_cannot_frame() {
        let mut oversized = cut_text(MAX_CUT_TEXT as i32 + 1, b"");
        oversized.extend_from_slice(&FB_UPDATE_REQUEST);
        let mut unknown = FB_UPDATE_REQUEST.to_vec();
        unknown.extend_from_slice(&[77, 0, 0, 0]);
        for (input, passed) in [(oversized, &[][..]), (unknown, &FB_UPDATE_REQUEST[..])] {
            let (mut viewer, mut server, relay) = start_serve(true, 64);
            viewer_handshake(&mut viewer, 8).await;
            let mut init = [0];
            server.read_exact(&mut init).await.expect("ClientInit");
            viewer.write_all(&input).await.expect("input");
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("closed");
            assert_eq!(got, passed);
            let mut rest = Vec::new();
            viewer
                .read_to_end(&mut rest)
                .await
                .expect("viewer closed too");
            assert!(relay.await.expect("join").is_err());
        }
    }

    #[tokio::test]
    async fn a_viewer_that_never_finishes_its_handshake_is_dropped() {
        let (mut viewer, viewer_side) = duplex(64);
        let (_server, server_side) = duplex(64);
        let limit = Duration::from_millis(50);
        let relay = tokio::spawn(serve(viewer_side, server_side, false, limit));
        let mut greeting = [0; 12];
        viewer.read_exact(&mut greeting).await.expect("greeting");
        // ... and silence.
        let ended = tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("serve gave up on the silent viewer")
            .expect("join");
        assert!(
            matches!(ended, Err(RfbError::ViewerTimeout(l)) if l == limit),
            "{ended:?}"
        );
    }
}

#[cfg(test)]
mod capture_tests {
    use super::*;
    use tokio::io::duplex;

    fn server_init(width: u16, height: u16) -> Vec<u8> {
        let mut init = Vec::new();
        init.extend_from_slice(&width.to_be_bytes());
        init.extend_from_slice(&height.to_be_bytes());
        // The server's own pixel format, which the client replaces.
        init.extend_from_slice(&[16, 16, 1, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0]);
        init.extend_from_slice(&4u32.to_be_bytes());
        init.extend_from_slice(b"seat");
        init
    }

    fn rect(x: u16, y: u16, w: u16, h: u16, encoding: i32, pixel: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [x, y, w, h] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&encoding.to_be_bytes());
        if encoding == 0 {
            for _ in 0..usize::from(w) * usize::from(h) {
                out.extend_from_slice(&pixel);
            }
        }
        out
    }

    /// Runs `capture` against a server that sends `script` after reading the client's
    /// ClientInit and requests; returns what the client sent and what it made of it.
    async fn against(script: Vec<u8>) -> (Vec<u8>, Result<Screen, RfbError>) {
        let (mut client, mut server) = duplex(1 << 16);
        let serving = tokio::spawn(async move {
            let mut init = [0; 1];
            server.read_exact(&mut init).await.expect("client init");
            server.write_all(&script).await.expect("script");
            let mut asked = vec![0; 38];
            // A client that failed early sends nothing more.
            let read = server.read_exact(&mut asked).await.map(|_| ()).ok();
            asked.insert(0, init[0]);
            (asked, read)
        });
        let screen = capture(&mut client).await;
        drop(client);
        let (asked, _) = serving.await.expect("server");
        (asked, screen)
    }

    #[tokio::test]
    async fn a_full_update_in_raw_becomes_the_screen_in_rgb() {
        let mut script = server_init(4, 2);
        script.push(2); // a bell first
        script.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']); // clipboard text
        script.extend_from_slice(&[0, 0, 0, 2]);
        // Left half blue-ish, right half red-ish (B, G, R, x).
        script.extend(rect(0, 0, 2, 2, 0, [200, 20, 10, 0]));
        script.extend(rect(2, 0, 2, 2, 0, [5, 30, 250, 0]));
        let (asked, screen) = against(script).await;
        let screen = screen.expect("screen");
        assert_eq!((screen.width, screen.height), (4, 2));
        let left = [10, 20, 200];
        let right = [250, 30, 5];
        let row: Vec<u8> = [left, left, right, right].concat();
        assert_eq!(screen.rgb, [row.clone(), row].concat());
        assert_eq!(asked[0], 1, "shared ClientInit");
        assert_eq!(&asked[1..5], &[0, 0, 0, 0], "SetPixelFormat");
        assert_eq!(asked[5], 32, "32 bits per pixel");
        assert_eq!(&asked[21..29], &[2, 0, 0, 1, 0, 0, 0, 0], "Raw only");
        assert_eq!(
            &asked[29..39],
            &[3, 0, 0, 0, 0, 0, 0, 4, 0, 2],
            "the whole screen"
        );
    }

    #[tokio::test]
    async fn another_encoding_is_refused() {
        let mut script = server_init(2, 2);
        script.extend_from_slice(&[0, 0, 0, 1]);
        script.extend(rect(0, 0, 2, 2, 7, [0; 4]));
        let (_, screen) = against(script).await;
        assert!(matches!(screen, Err(RfbError::Encoding(7))), "{screen:?}");
    }

    #[tokio::test]
    async fn a_rectangle_outside_the_screen_is_refused() {
        let mut script = server_init(2, 2);
        script.extend_from_slice(&[0, 0, 0, 1]);
        script.extend(rect(1, 1, 2, 2, 0, [0; 4]));
        let (_, screen) = against(script).await;
        assert!(
            matches!(screen, Err(RfbError::OutsideScreen(2, 2))),
            "{screen:?}"
        );
    }

    #[tokio::test]
    async fn an_empty_or_huge_screen_is_refused() {
        for (w, h) in [(0, 10), (u16::MAX, u16::MAX)] {
            let (_, screen) = against(server_init(w, h)).await;
            assert!(
                matches!(screen, Err(RfbError::ScreenSize(a, b)) if (a, b) == (w, h)),
                "{screen:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_that_closes_mid_update_is_an_error() {
        let mut script = server_init(2, 2);
        script.extend_from_slice(&[0, 0, 0, 1]);
        let mut cut = rect(0, 0, 2, 2, 0, [1, 2, 3, 0]);
        cut.truncate(cut.len() - 3);
        script.extend(cut);
        let (_, screen) = against(script).await;
        assert!(
            matches!(screen, Err(RfbError::Closed(Peer::Server))),
            "{screen:?}"
        );
    }
}
