//! Pictures of a browser seat's desktop for the instructor's seat wall: every few seconds
//! (the allocator's `desktop.thumbnail_seconds`, told in the answer to each picture) the
//! agent connects to its own VNC server as a viewer would, takes the whole screen, scales
//! it down to `WIDTH` pixels wide and sends it as a JPEG. An unchanged desktop is sent
//! again only once a minute (an allocator that restarted has it back by then). A seat in
//! Chrome Remote Desktop mode runs no VNC server and sends nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Allocator, CallError};
use super::desktop_channel::{DesktopSource, connect};
use crate::rfb::{self, Screen};

/// The width of a thumbnail (its height keeps the screen's proportions).
pub const WIDTH: u16 = 320;
/// JPEG quality: a 320×180 desktop is some 10 to 20 KB.
const QUALITY: u8 = 75;
/// Until the allocator says otherwise.
const DEFAULT_EVERY: Duration = Duration::from_secs(5);
/// An unchanged desktop is sent again this often.
const UNCHANGED_RESEND: Duration = Duration::from_secs(60);
/// Taking a picture on loopback takes milliseconds; a server that hangs is left after this.
const CAPTURE_LIMIT: Duration = Duration::from_secs(10);
/// An allocator without the seat wall (older, or upstream's) is asked again this rarely.
const NOT_SERVED_RETRY: Duration = Duration::from_secs(300);

pub async fn run(
    alloc: Arc<Allocator>,
    vnc: Arc<dyn DesktopSource>,
    cancel: CancellationToken,
) -> Result<(), CallError> {
    let mut every = DEFAULT_EVERY;
    // The last picture sent, and when.
    let mut sent: Option<(Screen, Instant)> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return Ok(()),
        }
        // No VNC server: no participant on a browser seat right now.
        if vnc.endpoint().is_err() {
            sent = None;
            continue;
        }
        let screen = match tokio::time::timeout(CAPTURE_LIMIT, take(vnc.as_ref())).await {
            Ok(Ok(screen)) => screen,
            Ok(Err(reason)) => {
                tracing::debug!(%reason, "no picture of the desktop");
                continue;
            }
            Err(_) => {
                tracing::debug!("the VNC server did not give a picture within {CAPTURE_LIMIT:?}");
                continue;
            }
        };
        let small = scale(&screen, WIDTH);
        if sent
            .as_ref()
            .is_some_and(|(last, at)| *last == small && at.elapsed() < UNCHANGED_RESEND)
        {
            continue;
        }
        let jpeg = match jpeg(&small) {
            Ok(jpeg) => jpeg,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the desktop's thumbnail");
                continue;
            }
        };
        match alloc.put_thumbnail(jpeg).await {
            Ok(seconds) => {
                every = seconds.map_or(DEFAULT_EVERY, |s| Duration::from_secs(s.max(1)));
                sent = Some((small, Instant::now()));
                failing = false;
            }
            Err(CallError::NotFound) => {
                tracing::info!(
                    "the allocator keeps no desktop thumbnails (an older version); asking again every {NOT_SERVED_RETRY:?}"
                );
                every = NOT_SERVED_RETRY;
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                // The seat may have just changed hands (409); said once per bad spell.
                if !failing {
                    tracing::info!(error = %e, "the allocator did not take the desktop's thumbnail");
                }
                failing = true;
            }
        }
    }
}

/// A picture of the local VNC server's screen.
async fn take(vnc: &dyn DesktopSource) -> Result<Screen, String> {
    let mut server = connect(vnc).await?;
    rfb::capture(&mut server)
        .await
        .map_err(|e| format!("cannot take a picture of the desktop: {e}"))
}

/// `screen` at most `width` pixels wide, proportions kept; each pixel the average of the
/// block of pixels it stands for.
pub fn scale(screen: &Screen, width: u16) -> Screen {
    let (sw, sh) = (usize::from(screen.width), usize::from(screen.height));
    let tw = usize::from(width.min(screen.width)).max(1);
    let th = (sh * tw).div_ceil(sw).clamp(1, sh.max(1));
    let mut rgb = Vec::with_capacity(tw * th * 3);
    let mut sums = vec![0u64; tw * 3];
    for ty in 0..th {
        let (y0, y1) = (ty * sh / th, ((ty + 1) * sh / th).max(ty * sh / th + 1));
        sums.fill(0);
        for y in y0..y1 {
            let row = &screen.rgb[y * sw * 3..(y + 1) * sw * 3];
            for tx in 0..tw {
                let (x0, x1) = (tx * sw / tw, ((tx + 1) * sw / tw).max(tx * sw / tw + 1));
                for pixel in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    for c in 0..3 {
                        sums[tx * 3 + c] += u64::from(pixel[c]);
                    }
                }
            }
        }
        for tx in 0..tw {
            let x0 = tx * sw / tw;
            let x1 = ((tx + 1) * sw / tw).max(x0 + 1);
            let count = ((x1 - x0) * (y1 - y0)) as u64;
            for c in 0..3 {
                rgb.push(((sums[tx * 3 + c] + count / 2) / count) as u8);
            }
        }
    }
    Screen {
        width: tw as u16,
        height: th as u16,
        rgb,
    }
}

/// `screen` as a baseline JPEG.
pub fn jpeg(screen: &Screen) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(
            &screen.rgb,
            screen.width,
            screen.height,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(width: u16, height: u16, colour: impl Fn(usize, usize) -> [u8; 3]) -> Screen {
        let mut rgb = Vec::new();
        for y in 0..usize::from(height) {
            for x in 0..usize::from(width) {
                rgb.extend_from_slice(&colour(x, y));
            }
        }
        Screen { width, height, rgb }
    }

    #[test]
    fn a_desktop_is_scaled_to_the_thumbnail_width_keeping_its_proportions() {
        let small = scale(&filled(1600, 900, |_, _| [10, 200, 30]), WIDTH);
        assert_eq!((small.width, small.height), (320, 180));
        assert_eq!(small.rgb.len(), 320 * 180 * 3);
        assert!(small.rgb.chunks_exact(3).all(|p| p == [10, 200, 30]));
    }

    #[test]
    fn each_pixel_is_the_average_of_its_block() {
        // Columns alternate black and white: every 2×2 block averages to mid-grey.
        let stripes = filled(8, 4, |x, _| if x % 2 == 0 { [0; 3] } else { [255; 3] });
        let small = scale(&stripes, 4);
        assert_eq!((small.width, small.height), (4, 2));
        assert!(small.rgb.iter().all(|&c| c == 128), "{:?}", small.rgb);
        // Left half red, right half blue stays so.
        let halves = filled(8, 2, |x, _| if x < 4 { [255, 0, 0] } else { [0, 0, 255] });
        let small = scale(&halves, 2);
        assert_eq!(small.rgb, [255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn a_screen_narrower_than_the_thumbnail_is_kept_as_it_is() {
        let tiny = filled(3, 7, |x, y| [x as u8, y as u8, 9]);
        assert_eq!(scale(&tiny, WIDTH), tiny);
        let odd = scale(&filled(1000, 3, |_, _| [1, 2, 3]), WIDTH);
        assert_eq!((odd.width, odd.height), (320, 1));
    }

    #[test]
    fn a_thumbnail_is_a_jpeg_of_reasonable_size() {
        let desktop = filled(320, 180, |x, y| {
            [(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8]
        });
        let jpeg = jpeg(&desktop).expect("encoded");
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
        assert!(jpeg.ends_with(&[0xff, 0xd9]));
        assert!(
            jpeg.len() < crate::pool::thumbnails::MAX_BYTES_PER_SEAT,
            "{}",
            jpeg.len()
        );
    }
}
