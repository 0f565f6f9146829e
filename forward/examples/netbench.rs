//! Load for `bench/forward.sh`: servers and clients that measure a TCP path (direct, through
//! `ssh -L`, through a forward session).
//!
//! ```text
//! netbench echo PORT                  serve: echo every connection
//! netbench sink PORT                  serve: read to the end, then answer the byte count
//! netbench bulk PORT MIB              send MIB mebibytes on one connection; print MB/s
//! netbench pingpong PORT COUNT SIZE   COUNT round trips of SIZE bytes; print p50/p95 in µs
//! netbench concurrent PORT N MIB      N connections echo MIB each at once; print the wall ms
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

fn serve(port: u16, handle: fn(TcpStream)) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || handle(stream));
    }
}

fn echo(mut stream: TcpStream) {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn sink(mut stream: TcpStream) {
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = stream.write_all(&total.to_be_bytes());
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn bulk(port: u16, mib: u64) {
    let mut stream = connect(port);
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    for _ in 0..mib {
        stream.write_all(&chunk).expect("send");
    }
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).expect("the count");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), mib << 20, "bytes lost");
    println!("{:.0}", (mib << 20) as f64 / seconds / 1e6);
}

fn pingpong(port: u16, count: usize, size: usize) {
    let mut stream = connect(port);
    let message = vec![7u8; size];
    let mut reply = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for round in 0..count + 50 {
        let started = Instant::now();
        stream.write_all(&message).expect("send");
        stream.read_exact(&mut reply).expect("reply");
        if round >= 50 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!("{:.0} {:.0}", at(0.5), at(0.95));
}

fn concurrent(port: u16, connections: usize, mib: usize) {
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|index| {
            std::thread::spawn(move || {
                let stream = connect(port);
                let mut writer = stream.try_clone().expect("clone");
                let data: Vec<u8> = (0..mib << 20).map(|i| (i + index) as u8).collect();
                let sent = data.clone();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&sent).expect("send");
                    writer.shutdown(Shutdown::Write).expect("half-close");
                });
                let mut back = Vec::with_capacity(data.len());
                let mut reader = stream;
                reader.read_to_end(&mut back).expect("echo");
                sender.join().expect("sender");
                assert!(back == data, "connection {index} was not echoed intact");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a connection");
    }
    println!("{:.0}", started.elapsed().as_secs_f64() * 1e3);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |index: usize| -> u64 { args[index].parse().expect("a number") };
    match args.get(1).map(String::as_str) {
        Some("echo") => serve(number(2) as u16, echo),
        Some("sink") => serve(number(2) as u16, sink),
        Some("bulk") => bulk(number(2) as u16, number(3)),
        Some("pingpong") => pingpong(number(2) as u16, number(3) as usize, number(4) as usize),
        Some("concurrent") => concurrent(number(2) as u16, number(3) as usize, number(4) as usize),
        _ => {
            eprintln!("usage: netbench echo|sink|bulk|pingpong|concurrent PORT ...");
            std::process::exit(2);
        }
    }
}
