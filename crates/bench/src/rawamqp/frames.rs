//! AMQP 0-9-1 frames: the byte layer of the bench's minimal client.
//!
//! Why the bench has one: the baseline of the broker's own limit needs a client that costs next
//! to nothing per message (ready frames written in one `write` from a tokio task), which lapin,
//! Herald's client, does not aim to be. This module is the codec such a client needs: frames in
//! and out, method arguments, RabbitMQ's field tables, and content headers with all fourteen
//! basic properties. It keeps no state and does no IO.
//!
//! Everything read from the socket is checked: a frame larger than the negotiated maximum, a
//! missing end octet, a truncated argument or an unknown field type is an error naming what is
//! wrong, never a panic or a silent skip.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
const FRAME_PREFIX: usize = 7;
/// Prefix plus end octet: what a body frame adds to its payload.
pub const FRAME_OVERHEAD: usize = FRAME_PREFIX + 1;
/// The smallest frame size every peer must accept.
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Class id of `basic`, the class of every content Herald sends.
pub const CLASS_BASIC: u16 = 60;

/// (class, method) ids.
pub mod id {
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    pub const CONNECTION_START_OK: (u16, u16) = (10, 11);
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    pub const CONNECTION_OPEN: (u16, u16) = (10, 40);
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub const CHANNEL_OPEN: (u16, u16) = (20, 10);
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub const BASIC_QOS: (u16, u16) = (60, 10);
    pub const BASIC_QOS_OK: (u16, u16) = (60, 11);
    pub const BASIC_CONSUME: (u16, u16) = (60, 20);
    pub const BASIC_CONSUME_OK: (u16, u16) = (60, 21);
    pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
    pub const BASIC_DELIVER: (u16, u16) = (60, 60);
    pub const BASIC_ACK: (u16, u16) = (60, 80);
    pub const BASIC_NACK: (u16, u16) = (60, 120);
    pub const CONFIRM_SELECT: (u16, u16) = (85, 10);
    pub const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
}

/// Why bytes are not a valid frame, argument or table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("frame of {size} bytes is over the negotiated maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame without its end octet (found {0:#04x})")]
    BadEnd(u8),
    #[error("unknown field-table value type {0:?}")]
    UnknownFieldType(char),
    #[error("short string of {0} bytes (at most 255)")]
    ShortStringTooLong(usize),
    #[error("{0} is too large for an AMQP length")]
    TooLong(&'static str),
}

/// One frame as read: its type, channel and payload (end octet removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Bytes,
}

impl Frame {
    /// (class, method) of a method frame and its arguments; None for other frames.
    pub fn method(&self) -> Option<((u16, u16), Bytes)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let mut p = self.payload.clone();
        let class = p.get_u16();
        let method = p.get_u16();
        Some(((class, method), p))
    }
}

/// Takes one whole frame off the front of `buf`; None while it is incomplete. `frame_max` is
/// the negotiated maximum frame size (prefix and end octet included; 0 means no limit).
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_PREFIX {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = FRAME_OVERHEAD + size;
    if frame_max != 0 && total > frame_max as usize {
        return Err(FrameError::TooLarge {
            size: total,
            max: frame_max as usize,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut whole = buf.split_to(total).freeze();
    let kind = whole.get_u8();
    let channel = whole.get_u16();
    whole.advance(4);
    let payload = whole.split_to(size);
    match whole.first() {
        Some(&FRAME_END) => Ok(Some(Frame {
            kind,
            channel,
            payload,
        })),
        Some(&other) => Err(FrameError::BadEnd(other)),
        None => Err(FrameError::Truncated("frame")),
    }
}

/// Appends a frame around what `body` writes.
pub fn put_frame<E>(
    out: &mut BytesMut,
    kind: u8,
    channel: u16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<FrameError>,
{
    let start = out.len();
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(0);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let Ok(size) = u32::try_from(out.len() - start - FRAME_PREFIX) else {
        out.truncate(start);
        return Err(FrameError::TooLong("frame").into());
    };
    out[start + 3..start + FRAME_PREFIX].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
    Ok(())
}

/// Appends a method frame: class, method, then what `args` writes. Nothing is appended when
/// `args` fails.
pub fn put_method(
    out: &mut BytesMut,
    channel: u16,
    method: (u16, u16),
    args: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    put_frame(out, FRAME_METHOD, channel, |b| {
        b.put_u16(method.0);
        b.put_u16(method.1);
        args(b)
    })
}

pub fn put_short_str(out: &mut BytesMut, s: &str) -> Result<(), FrameError> {
    let len = u8::try_from(s.len()).map_err(|_| FrameError::ShortStringTooLong(s.len()))?;
    out.put_u8(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

pub fn put_long_str(out: &mut BytesMut, s: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(s.len()).map_err(|_| FrameError::TooLong("long string"))?;
    out.put_u32(len);
    out.put_slice(s);
    Ok(())
}

fn need(p: &Bytes, n: usize, what: &'static str) -> Result<(), FrameError> {
    if p.remaining() < n {
        Err(FrameError::Truncated(what))
    } else {
        Ok(())
    }
}

pub fn get_u8(p: &mut Bytes, what: &'static str) -> Result<u8, FrameError> {
    need(p, 1, what)?;
    Ok(p.get_u8())
}

pub fn get_u16(p: &mut Bytes, what: &'static str) -> Result<u16, FrameError> {
    need(p, 2, what)?;
    Ok(p.get_u16())
}

pub fn get_u32(p: &mut Bytes, what: &'static str) -> Result<u32, FrameError> {
    need(p, 4, what)?;
    Ok(p.get_u32())
}

pub fn get_u64(p: &mut Bytes, what: &'static str) -> Result<u64, FrameError> {
    need(p, 8, what)?;
    Ok(p.get_u64())
}

/// A short string (invalid UTF-8 replaced: names and texts are for logs and matching).
pub fn get_short_str(p: &mut Bytes) -> Result<String, FrameError> {
    let n = usize::from(get_u8(p, "short string")?);
    need(p, n, "short string")?;
    let s = String::from_utf8_lossy(&p[..n]).into_owned();
    p.advance(n);
    Ok(s)
}

pub fn get_long_str(p: &mut Bytes) -> Result<Bytes, FrameError> {
    let n = get_u32(p, "long string")? as usize;
    need(p, n, "long string")?;
    Ok(p.split_to(n))
}

/// A field-table or array value, in RabbitMQ's dialect of the type codes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// (scale, value): value / 10^scale.
    Decimal(u8, u32),
    LongStr(Bytes),
    Array(Vec<Value>),
    /// Seconds since the epoch.
    Timestamp(u64),
    Table(Table),
    Void,
    ByteArray(Bytes),
}

/// A field table, in wire order.
pub type Table = Vec<(String, Value)>;

fn put_value(out: &mut BytesMut, v: &Value) -> Result<(), FrameError> {
    match v {
        Value::Bool(b) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*b));
        }
        Value::I8(x) => {
            out.put_u8(b'b');
            out.put_i8(*x);
        }
        Value::U8(x) => {
            out.put_u8(b'B');
            out.put_u8(*x);
        }
        Value::I16(x) => {
            out.put_u8(b's');
            out.put_i16(*x);
        }
        Value::U16(x) => {
            out.put_u8(b'u');
            out.put_u16(*x);
        }
        Value::I32(x) => {
            out.put_u8(b'I');
            out.put_i32(*x);
        }
        Value::U32(x) => {
            out.put_u8(b'i');
            out.put_u32(*x);
        }
        Value::I64(x) => {
            out.put_u8(b'l');
            out.put_i64(*x);
        }
        Value::F32(x) => {
            out.put_u8(b'f');
            out.put_f32(*x);
        }
        Value::F64(x) => {
            out.put_u8(b'd');
            out.put_f64(*x);
        }
        Value::Decimal(scale, x) => {
            out.put_u8(b'D');
            out.put_u8(*scale);
            out.put_u32(*x);
        }
        Value::LongStr(s) => {
            out.put_u8(b'S');
            put_long_str(out, s)?;
        }
        Value::Array(items) => {
            out.put_u8(b'A');
            put_sized(out, "array", |b| {
                items.iter().try_for_each(|item| put_value(b, item))
            })?;
        }
        Value::Timestamp(t) => {
            out.put_u8(b'T');
            out.put_u64(*t);
        }
        Value::Table(t) => {
            out.put_u8(b'F');
            put_table(out, t)?;
        }
        Value::Void => out.put_u8(b'V'),
        Value::ByteArray(b) => {
            out.put_u8(b'x');
            put_long_str(out, b)?;
        }
    }
    Ok(())
}

/// Writes a u32 length, then what `body` writes, then fills the length in.
fn put_sized(
    out: &mut BytesMut,
    what: &'static str,
    body: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let at = out.len();
    out.put_u32(0);
    body(out)?;
    let len = u32::try_from(out.len() - at - 4).map_err(|_| FrameError::TooLong(what))?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

pub fn put_table(out: &mut BytesMut, table: &[(String, Value)]) -> Result<(), FrameError> {
    put_sized(out, "table", |b| {
        for (k, v) in table {
            put_short_str(b, k)?;
            put_value(b, v)?;
        }
        Ok(())
    })
}

fn get_value(p: &mut Bytes) -> Result<Value, FrameError> {
    let code = get_u8(p, "field value")?;
    let what = "field value";
    Ok(match code {
        b't' => Value::Bool(get_u8(p, what)? != 0),
        b'b' => Value::I8(get_u8(p, what)? as i8),
        b'B' => Value::U8(get_u8(p, what)?),
        b's' => Value::I16(get_u16(p, what)? as i16),
        b'u' => Value::U16(get_u16(p, what)?),
        b'I' => Value::I32(get_u32(p, what)? as i32),
        b'i' => Value::U32(get_u32(p, what)?),
        b'l' => Value::I64(get_u64(p, what)? as i64),
        b'f' => Value::F32(f32::from_bits(get_u32(p, what)?)),
        b'd' => Value::F64(f64::from_bits(get_u64(p, what)?)),
        b'D' => {
            let scale = get_u8(p, what)?;
            Value::Decimal(scale, get_u32(p, what)?)
        }
        b'S' => Value::LongStr(get_long_str(p)?),
        b'x' => Value::ByteArray(get_long_str(p)?),
        b'A' => {
            let mut inner = get_long_str(p).map_err(|_| FrameError::Truncated("array"))?;
            let mut items = Vec::new();
            while inner.has_remaining() {
                items.push(get_value(&mut inner)?);
            }
            Value::Array(items)
        }
        b'T' => Value::Timestamp(get_u64(p, what)?),
        b'F' => Value::Table(get_table(p)?),
        b'V' => Value::Void,
        other => return Err(FrameError::UnknownFieldType(char::from(other))),
    })
}

pub fn get_table(p: &mut Bytes) -> Result<Table, FrameError> {
    let mut inner = get_long_str(p).map_err(|_| FrameError::Truncated("table"))?;
    let mut table = Vec::new();
    while inner.has_remaining() {
        let key = get_short_str(&mut inner)?;
        table.push((key, get_value(&mut inner)?));
    }
    Ok(table)
}

/// The basic class's content properties; unset ones are not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<Table>,
    /// 2 = persistent.
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

/// Property flag bits, highest first, in the order their values are written.
const P_CONTENT_TYPE: u16 = 1 << 15;
const P_CONTENT_ENCODING: u16 = 1 << 14;
const P_HEADERS: u16 = 1 << 13;
const P_DELIVERY_MODE: u16 = 1 << 12;
const P_PRIORITY: u16 = 1 << 11;
const P_CORRELATION_ID: u16 = 1 << 10;
const P_REPLY_TO: u16 = 1 << 9;
const P_EXPIRATION: u16 = 1 << 8;
const P_MESSAGE_ID: u16 = 1 << 7;
const P_TIMESTAMP: u16 = 1 << 6;
const P_TYPE: u16 = 1 << 5;
const P_USER_ID: u16 = 1 << 4;
const P_APP_ID: u16 = 1 << 3;
const P_CLUSTER_ID: u16 = 1 << 2;

impl Properties {
    fn flags(&self) -> u16 {
        let mut f = 0;
        let mut set = |bit: u16, present: bool| {
            if present {
                f |= bit;
            }
        };
        set(P_CONTENT_TYPE, self.content_type.is_some());
        set(P_CONTENT_ENCODING, self.content_encoding.is_some());
        set(P_HEADERS, self.headers.is_some());
        set(P_DELIVERY_MODE, self.delivery_mode.is_some());
        set(P_PRIORITY, self.priority.is_some());
        set(P_CORRELATION_ID, self.correlation_id.is_some());
        set(P_REPLY_TO, self.reply_to.is_some());
        set(P_EXPIRATION, self.expiration.is_some());
        set(P_MESSAGE_ID, self.message_id.is_some());
        set(P_TIMESTAMP, self.timestamp.is_some());
        set(P_TYPE, self.kind.is_some());
        set(P_USER_ID, self.user_id.is_some());
        set(P_APP_ID, self.app_id.is_some());
        set(P_CLUSTER_ID, self.cluster_id.is_some());
        f
    }

    fn put(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        out.put_u16(self.flags());
        let short = |out: &mut BytesMut, s: &Option<String>| match s {
            Some(s) => put_short_str(out, s),
            None => Ok(()),
        };
        short(out, &self.content_type)?;
        short(out, &self.content_encoding)?;
        if let Some(h) = &self.headers {
            put_table(out, h)?;
        }
        if let Some(m) = self.delivery_mode {
            out.put_u8(m);
        }
        if let Some(p) = self.priority {
            out.put_u8(p);
        }
        short(out, &self.correlation_id)?;
        short(out, &self.reply_to)?;
        short(out, &self.expiration)?;
        short(out, &self.message_id)?;
        if let Some(t) = self.timestamp {
            out.put_u64(t);
        }
        short(out, &self.kind)?;
        short(out, &self.user_id)?;
        short(out, &self.app_id)?;
        short(out, &self.cluster_id)
    }

    fn get(p: &mut Bytes) -> Result<Self, FrameError> {
        let flags = get_u16(p, "property flags")?;
        if flags & 1 != 0 {
            // A continuation word: no property of class basic needs one.
            return Err(FrameError::Truncated(
                "property flags (continuation unsupported)",
            ));
        }
        let has = |bit: u16| flags & bit != 0;
        let short = |p: &mut Bytes, bit: u16| -> Result<Option<String>, FrameError> {
            if has(bit) {
                get_short_str(p).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            content_type: short(p, P_CONTENT_TYPE)?,
            content_encoding: short(p, P_CONTENT_ENCODING)?,
            headers: if has(P_HEADERS) {
                Some(get_table(p)?)
            } else {
                None
            },
            delivery_mode: if has(P_DELIVERY_MODE) {
                Some(get_u8(p, "delivery mode")?)
            } else {
                None
            },
            priority: if has(P_PRIORITY) {
                Some(get_u8(p, "priority")?)
            } else {
                None
            },
            correlation_id: short(p, P_CORRELATION_ID)?,
            reply_to: short(p, P_REPLY_TO)?,
            expiration: short(p, P_EXPIRATION)?,
            message_id: short(p, P_MESSAGE_ID)?,
            timestamp: if has(P_TIMESTAMP) {
                Some(get_u64(p, "timestamp")?)
            } else {
                None
            },
            kind: short(p, P_TYPE)?,
            user_id: short(p, P_USER_ID)?,
            app_id: short(p, P_APP_ID)?,
            cluster_id: short(p, P_CLUSTER_ID)?,
        })
    }
}

/// Appends a content header and the body frames of `body`, each frame at most `frame_max`
/// bytes (0: no limit, as in `connection.tune`). Nothing is appended when the content does not
/// encode or its header alone is over the limit.
pub fn put_content(
    out: &mut BytesMut,
    channel: u16,
    properties: &Properties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), FrameError> {
    let start = out.len();
    put_frame(out, FRAME_HEADER, channel, |b| {
        b.put_u16(CLASS_BASIC);
        b.put_u16(0);
        b.put_u64(body.len() as u64);
        properties.put(b)
    })?;
    let max = match frame_max {
        0 => usize::MAX,
        n => n.max(FRAME_MIN_SIZE) as usize,
    };
    let header = out.len() - start;
    if header > max {
        out.truncate(start);
        return Err(FrameError::TooLarge { size: header, max });
    }
    let chunk = max - FRAME_OVERHEAD;
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        let written = put_frame::<FrameError>(out, FRAME_BODY, channel, |b| {
            b.put_slice(part);
            Ok(())
        });
        if let Err(e) = written {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Body size and properties of a content header frame's payload.
pub fn get_content_header(mut p: Bytes) -> Result<(u64, Properties), FrameError> {
    let _class = get_u16(&mut p, "content header")?;
    let _weight = get_u16(&mut p, "content header")?;
    let size = get_u64(&mut p, "content header")?;
    Ok((size, Properties::get(&mut p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], frame_max: u32) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = decode(&mut buf, frame_max).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        out
    }

    #[test]
    fn a_method_frame_carries_its_size_ids_and_end_octet() {
        let mut out = BytesMut::new();
        put_method(&mut out, 3, id::BASIC_ACK, |b| {
            b.put_u64(7);
            b.put_u8(1);
            Ok(())
        })
        .unwrap();
        assert_eq!(&out[..7], &[FRAME_METHOD, 0, 3, 0, 0, 0, 13]);
        assert_eq!(out.len(), 7 + 13 + 1);
        assert_eq!(out[out.len() - 1], FRAME_END);
        let frames = decode_all(&out, 0);
        let ((class, method), mut args) = frames[0].method().unwrap();
        assert_eq!((frames[0].channel, class, method), (3, 60, 80));
        assert_eq!(args.get_u64(), 7);
        assert_eq!(args.get_u8(), 1);
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_taken_only_when_whole() {
        let mut whole = BytesMut::new();
        whole.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
        put_method(&mut whole, 1, id::CHANNEL_OPEN, |b| put_short_str(b, "")).unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in whole.iter() {
            buf.put_u8(*byte);
            if let Some(f) = decode(&mut buf, 0).unwrap() {
                got.push(f.kind);
            }
        }
        assert_eq!(got, vec![FRAME_HEARTBEAT, FRAME_METHOD]);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut buf = BytesMut::from(&[FRAME_METHOD, 0, 1, 0, 0, 0, 1, 9, 0xAB][..]);
        assert_eq!(decode(&mut buf, 0), Err(FrameError::BadEnd(0xAB)));
        let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(
            decode(&mut buf, 4096),
            Err(FrameError::TooLarge {
                size: 65_544,
                max: 4096
            })
        );
        let mut p = Bytes::from_static(&[5, b'a', b'b']);
        assert_eq!(
            get_short_str(&mut p),
            Err(FrameError::Truncated("short string"))
        );
        let mut p = Bytes::from_static(&[0, 0, 0, 3, 1, b'k', b'?']);
        assert_eq!(get_table(&mut p), Err(FrameError::UnknownFieldType('?')));
        let mut out = BytesMut::new();
        let long = "x".repeat(256);
        assert_eq!(
            put_method(&mut out, 1, id::BASIC_PUBLISH, |b| put_short_str(b, &long)),
            Err(FrameError::ShortStringTooLong(256))
        );
        assert!(
            out.is_empty(),
            "a failed method leaves nothing half-written"
        );
    }

    #[test]
    fn every_field_type_survives_a_round_trip() {
        let table: Table = vec![
            ("bool".into(), Value::Bool(true)),
            ("i8".into(), Value::I8(-3)),
            ("u8".into(), Value::U8(250)),
            ("i16".into(), Value::I16(-300)),
            ("u16".into(), Value::U16(60_000)),
            ("i32".into(), Value::I32(-70_000)),
            ("u32".into(), Value::U32(4_000_000_000)),
            ("i64".into(), Value::I64(-5_000_000_000)),
            ("f32".into(), Value::F32(1.5)),
            ("f64".into(), Value::F64(-2.25)),
            ("dec".into(), Value::Decimal(2, 12_345)),
            (
                "str".into(),
                Value::LongStr(Bytes::from_static(b"traceparent")),
            ),
            ("ts".into(), Value::Timestamp(1_764_633_600)),
            ("void".into(), Value::Void),
            (
                "bytes".into(),
                Value::ByteArray(Bytes::from_static(&[0, 1, 2])),
            ),
            (
                "x-death".into(),
                Value::Array(vec![Value::Table(vec![
                    ("count".into(), Value::I64(2)),
                    ("queue".into(), Value::LongStr(Bytes::from_static(b"work"))),
                ])]),
            ),
        ];
        let mut out = BytesMut::new();
        put_table(&mut out, &table).unwrap();
        let mut p = out.freeze();
        assert_eq!(get_table(&mut p).unwrap(), table);
        assert!(p.is_empty());
    }

    #[test]
    fn content_is_split_at_the_frame_size_and_its_properties_round_trip() {
        let props = Properties {
            content_type: Some("application/json".into()),
            headers: Some(vec![(
                "traceparent".into(),
                Value::LongStr(Bytes::from_static(b"00-abc-def-01")),
            )]),
            delivery_mode: Some(2),
            message_id: Some("m-1".into()),
            timestamp: Some(42),
            app_id: Some("herald".into()),
            ..Default::default()
        };
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = BytesMut::new();
        put_content(&mut out, 2, &props, &body, 4096).unwrap();
        let frames = decode_all(&out, 4096);
        assert_eq!(frames[0].kind, FRAME_HEADER);
        let (size, got) = get_content_header(frames[0].payload.clone()).unwrap();
        assert_eq!((size, &got), (10_000, &props));
        let bodies: Vec<&Frame> = frames[1..].iter().collect();
        assert_eq!(bodies.len(), 3, "4,088 + 4,088 + 1,824 bytes");
        assert!(
            bodies
                .iter()
                .all(|f| f.kind == FRAME_BODY && f.channel == 2)
        );
        let joined: Vec<u8> = bodies.iter().flat_map(|f| f.payload.to_vec()).collect();
        assert_eq!(joined, body);
        // A header over the frame size is refused whole, with its size.
        let mut out = BytesMut::from(&b"kept"[..]);
        let huge = Properties {
            headers: Some(vec![(
                "big".into(),
                Value::LongStr(Bytes::from(vec![b'x'; 5_000])),
            )]),
            ..Default::default()
        };
        assert_eq!(
            put_content(&mut out, 1, &huge, b"{}", 4096),
            Err(FrameError::TooLarge {
                size: 5_035,
                max: 4096
            })
        );
        assert_eq!(&out[..], b"kept");
        // No properties at all, and an empty body: a header frame only.
        let mut out = BytesMut::new();
        put_content(&mut out, 1, &Properties::default(), &[], 0).unwrap();
        let frames = decode_all(&out, 0);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            get_content_header(frames[0].payload.clone()).unwrap(),
            (0, Properties::default())
        );
    }
}
