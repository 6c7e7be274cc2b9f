//! The frame decoder: every frame type round-trips, whole and split at every byte; and against a
//! million random and mutated inputs it must never panic, never claim more bytes than it was
//! given, and every frame it accepts must encode back to exactly the bytes it was decoded from.

use std::io::{self, Read};

use client_server_chat::protocol::{Frame, VERSION, decode};
use client_server_chat::wire::{FrameReader, ReadError};

/// A small seeded generator (xorshift64*), so every run checks the same inputs and a failure can
/// be replayed from the seed printed with it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One frame of each type (and an empty MESSAGE): the round-trip cases and the fuzzer's seeds.
fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::Hello {
            version: VERSION,
            max_message: 65536,
            name: "alice".into(),
        },
        Frame::Welcome {
            session_id: 7,
            max_message: 1024,
            name: "hub".into(),
        },
        Frame::Waiting { position: 3 },
        Frame::Message(b"a\0b\xff\nc".to_vec()),
        Frame::Message(Vec::new()),
        Frame::Ack,
        Frame::End,
        Frame::Full,
        Frame::Shutdown,
        Frame::Error("bad".into()),
        Frame::Kicked("bye".into()),
        Frame::Ping,
        Frame::Pong,
    ]
}

#[test]
fn every_frame_round_trips_whole_and_byte_by_byte() {
    let mut wire = Vec::new();
    for f in sample_frames() {
        f.encode_into(&mut wire);
    }
    let mut rest = &wire[..];
    for f in sample_frames() {
        let (got, used) = decode(rest, 100).unwrap().unwrap();
        assert_eq!(got, f);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());

    // One byte per read: every split point must be handled.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut source = Trickle(&wire);
    let mut reader = FrameReader::new(100);
    for f in sample_frames() {
        assert_eq!(reader.read_frame(&mut source).unwrap(), f);
    }
    assert!(matches!(
        reader.read_frame(&mut source),
        Err(ReadError::Closed)
    ));
}

/// The sample frames as bytes, for mutation.
fn seeds() -> Vec<Vec<u8>> {
    sample_frames().iter().map(Frame::encode).collect()
}

/// One input: pure noise, or a valid frame (or two) with a few bytes flipped, cut or inserted.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(4) == 0 {
        let len = rng.below(40);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    if rng.below(3) == 0 {
        bytes.extend_from_slice(&seeds[rng.below(seeds.len())]);
    }
    for _ in 0..=rng.below(3) {
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            1 if !bytes.is_empty() => {
                let cut = rng.below(bytes.len());
                bytes.truncate(cut);
            }
            2 => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, rng.next() as u8);
            }
            _ if bytes.len() >= 5 => {
                // Lengths are where decoders go wrong: aim at them.
                let i = 1 + rng.below(4);
                bytes[i] = [0, 1, 0x7f, 0xff][rng.below(4)];
            }
            _ => {}
        }
    }
    bytes
}

#[test]
fn a_million_hostile_inputs_never_panic_and_accepted_frames_are_exact() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut accepted, mut rejected, mut partial) = (0u32, 0u32, 0u32);
    for case in 0..1_000_000u32 {
        let bytes = input(&mut rng, &seeds);
        match decode(&bytes, 64) {
            Ok(Some((frame, used))) => {
                assert!(used <= bytes.len(), "case {case}: used {used} of {bytes:?}");
                assert_eq!(frame.encode(), bytes[..used], "case {case}: {frame:?}");
                accepted += 1;
            }
            Ok(None) => partial += 1,
            Err(_) => rejected += 1,
        }
    }
    // The generator must exercise all three outcomes, or the test proves little.
    assert!(accepted > 10_000 && rejected > 10_000 && partial > 10_000);
}

#[test]
fn the_buffered_reader_survives_hostile_streams() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_0000_0000_0002);
    for _ in 0..20_000 {
        let mut stream = Vec::new();
        for _ in 0..=rng.below(4) {
            stream.extend(input(&mut rng, &seeds));
        }
        let mut source = &stream[..];
        let mut reader = FrameReader::new(64);
        // Each frame consumes at least a header, so this many reads always reach the end.
        for _ in 0..=stream.len() / 5 + 1 {
            match reader.read_frame(&mut source) {
                Ok(_) => {}
                Err(ReadError::Closed | ReadError::Protocol(_)) => break,
                Err(ReadError::Io(e)) => panic!("a slice cannot fail: {e}"),
            }
        }
    }
}
