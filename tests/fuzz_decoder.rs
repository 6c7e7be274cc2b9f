//! The frame decoder against a million random and mutated inputs: it must never panic, never
//! claim more bytes than it was given, and every frame it accepts must encode back to exactly the
//! bytes it was decoded from.

use client_server_chat::protocol::{Frame, FrameReader, ReadError, decode};

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

fn valid_frames() -> Vec<Vec<u8>> {
    [
        Frame::Hello {
            version: 1,
            max_message: 65536,
            name: "alice".into(),
        },
        Frame::Welcome {
            session_id: 1,
            max_message: 65536,
            name: "hub".into(),
        },
        Frame::Waiting { position: 2 },
        Frame::Message(b"hi\0\xff\n".to_vec()),
        Frame::Ack,
        Frame::End,
        Frame::Full,
        Frame::Shutdown,
        Frame::Error("bad".into()),
        Frame::Kicked("bye".into()),
        Frame::Ping,
        Frame::Pong,
    ]
    .iter()
    .map(Frame::encode)
    .collect()
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
    let seeds = valid_frames();
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
    let seeds = valid_frames();
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
