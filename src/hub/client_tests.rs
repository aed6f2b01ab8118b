//! Tests of `hub::client`: outbox overflow, partly written frames, queue buffers.
use super::*;
use crate::model::PLAIN;

/// A socket that takes `room` more bytes, then would block.
struct Socket {
    room: Mutex<usize>,
    got: Mutex<Vec<u8>>,
}

impl Writer for Socket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut room = self.room.lock();
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(*room - n);
            self.got.lock().extend_from_slice(&buf[..take]);
            n += take;
        }
        *room -= n;
        Ok(n)
    }
}

fn client() -> Client {
    let limits = QueueLimits {
        max_frames: 100,
        max_bytes: 1000,
    };
    Client::new(
        ClientId(1),
        &PLAIN,
        "127.0.0.1:1".parse().unwrap(),
        limits,
        0,
    )
}

// issue #12 item 8: the flusher wrote part of a frame, then the outbox overflowed:
// the rest of that frame survives the give-up; whole frames behind it do not.
#[test]
fn an_overflow_keeps_the_rest_of_a_partly_written_frame() {
    let c = client();
    let socket = Arc::new(Socket {
        room: Mutex::new(150),
        got: Mutex::default(),
    });
    c.attach(socket.clone());
    c.push(Bytes::from(vec![1u8; 100]));
    c.push(Bytes::from(vec![2u8; 100]));
    assert_eq!(c.flush().bytes, 150, "one frame and a half written");
    let pushed: Vec<_> = (0..10)
        .map(|_| c.push(Bytes::from(vec![3u8; 100])))
        .collect();
    assert!(pushed.contains(&Pushed::Overflow), "{pushed:?}");
    c.detach();
    let mut pending = VecDeque::new();
    c.give_up(&mut pending);
    assert_eq!(pending.len(), 1);
    assert_eq!(&pending[0][..], &[2u8; 50][..], "the rest of frame 2");
    // Nothing is partly written any more: a second give-up keeps nothing.
    *socket.room.lock() = 1000;
    assert_eq!(c.write_pending(&mut pending, &*socket).unwrap(), 50);
    c.give_up(&mut pending);
    assert!(pending.is_empty());
}

// issue #12 item 8: the session holds the partly written frame; the queue behind it
// is dropped whole.
#[test]
fn the_session_keeps_only_its_partly_written_front_frame() {
    let c = client();
    let socket = Socket {
        room: Mutex::new(30),
        got: Mutex::default(),
    };
    c.push(Bytes::from(vec![1u8; 100]));
    c.push(Bytes::from(vec![2u8; 100]));
    let mut pending = VecDeque::new();
    let (written, close) = c.write_step(&mut pending, &socket).unwrap();
    assert_eq!((written, close), (30, None));
    assert_eq!(pending.len(), 2);
    c.push(Bytes::from(vec![3u8; 100]));
    c.give_up(&mut pending);
    assert_eq!(pending.len(), 1);
    assert_eq!(&pending[0][..], &[1u8; 70][..]);
}

// issue #18 item 4: once everything queued is written, neither the outbox nor the
// session holds a buffer (a client that had traffic and went idle costs what an
// idle one does).
#[test]
fn a_drained_client_keeps_no_queue_buffers() {
    let c = client();
    let socket = Arc::new(Socket {
        room: Mutex::new(usize::MAX),
        got: Mutex::default(),
    });
    c.attach(socket.clone());
    for _ in 0..50 {
        c.push(Bytes::from_static(b"x"));
    }
    assert!(c.outbox.lock().queue.capacity() >= 50);
    assert_eq!(c.flush().frames, 50);
    assert_eq!(c.outbox.lock().queue.capacity(), 0, "the flusher's path");
    for _ in 0..50 {
        c.push(Bytes::from_static(b"y"));
    }
    let mut pending = VecDeque::with_capacity(16);
    let (written, close) = c.write_step(&mut pending, &*socket).unwrap();
    assert_eq!((written, close), (50, None));
    assert_eq!(pending.capacity(), 0, "the session's path");
    assert_eq!(c.outbox.lock().queue.capacity(), 0);
}

#[test]
fn whole_frames_only_are_all_given_up() {
    let c = client();
    c.push(Bytes::from(vec![1u8; 100]));
    let mut pending = VecDeque::new();
    c.give_up(&mut pending);
    assert!(pending.is_empty());
}
