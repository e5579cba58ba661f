"""`ros2 run keyseg_ros voice_query`: spoken questions become queries for keyseg_node.

Audio from WAV files (--wav), a microphone (--mic, needs the `sounddevice` package) or raw
16-bit PCM on stdin (--stdin, e.g. `arecord -f S16_LE -r 16000 -c 1 | ... --stdin`) is
recognised offline by keyseg_core.speech (pocketsphinx biased toward the model's query phrasings
and keywords; or faster-whisper from a local model folder) and published as std_msgs/String on
<namespace>/query, reliable and transient_local, as the `query` tool does.

A WAV file is one query. A microphone or stdin stream is cut into utterances by voice activity
detection; each is one query. Audio that is silent, clipped, noise or not audio, and utterances
in which nothing was recognised, are logged with the reason and publish nothing.

Exit codes: 0 done; 1 cannot start (no microphone, no recogniser, nobody subscribes);
2 bad arguments; 3 some input was refused (no query published for it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from keyseg_core.speech import (SAMPLE_RATE, Audio, AudioError, QueryVocabulary,
                                Utterances, check_speech, from_pcm, make_recognizer, read_wav)
from keyseg_core.speech.recognizer import ENGINES

MAX_UTTERANCE_S = 15.0  # a stream that never pauses is cut here
BLOCK_S = 0.25  # audio read per step from a microphone or stdin


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice_query", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", nargs="+", type=Path, metavar="FILE", help="WAV files, one query each")
    source.add_argument("--mic", nargs="?", const="", metavar="DEVICE",
                        help="listen to a microphone (sounddevice name or index; none: the default input)")
    source.add_argument("--stdin", action="store_true", help="raw little-endian 16-bit PCM on stdin")
    parser.add_argument("--rate", type=int, default=SAMPLE_RATE,
                        help=f"--stdin sample rate in Hz (default: {SAMPLE_RATE}; others are resampled)")
    parser.add_argument("--channels", type=int, default=1, help="--stdin channel count (default: 1)")
    parser.add_argument("--namespace", default="/keyseg", help="namespace of keyseg_node (default: /keyseg)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="seconds to wait for keyseg_node to subscribe (default: 10)")
    parser.add_argument("--engine", choices=ENGINES, default="pocketsphinx",
                        help="speech recogniser (default: pocketsphinx)")
    parser.add_argument("--whisper-model", metavar="DIR",
                        help="local faster-whisper model folder (with --engine faster-whisper)")
    parser.add_argument("--vocabulary", type=Path, metavar="FILE",
                        help="query phrasings and keywords to bias toward (YAML/JSON with phrases and "
                             "keywords, or one phrase a line); default: COCO keywords and common phrasings")
    parser.add_argument("--no-bias", action="store_true", help="recognise general English instead")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help="publish only transcripts with at least this confidence (default: 0)")
    parser.add_argument("--dry-run", action="store_true", help="print what was heard; publish nothing")
    return parser


class Log:
    """The ROS logger once there is a node; stderr before (or with --dry-run)."""

    def __init__(self) -> None:
        self.node = None

    def info(self, text: str) -> None:
        if self.node is not None:
            self.node.get_logger().info(text)
        else:
            print(f"voice_query: {text}", file=sys.stderr, flush=True)

    def warning(self, text: str) -> None:
        if self.node is not None:
            self.node.get_logger().warning(text)
        else:
            print(f"voice_query: warning: {text}", file=sys.stderr, flush=True)


class Microphone:
    """A 16 kHz mono int16 input stream from sounddevice, opened (or refused) up front."""

    def __init__(self, device: str) -> None:
        label = f"'{device}'" if device else "the default input device"
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
            raise RuntimeError(f"cannot use microphone {label}: the sounddevice package (and the "
                               f"PortAudio library, apt-get install libportaudio2) is needed: {exc}") from None
        selector = int(device) if device.isdigit() else (device or None)
        try:
            info = sd.query_devices(selector, "input")
        except (ValueError, sd.PortAudioError) as exc:
            names = [d["name"] for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]
            raise RuntimeError(f"microphone {label} not found ({exc}); input devices here: "
                               f"{', '.join(names) if names else 'none'}") from None
        self.name = info["name"]
        try:
            self.stream = sd.RawInputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                            device=selector, blocksize=int(SAMPLE_RATE * BLOCK_S))
            self.stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise RuntimeError(f"microphone {label} ({self.name}) cannot be opened at {SAMPLE_RATE} Hz "
                               f"mono: {exc} (is another program using it?)") from None

    def blocks(self):
        frames = int(SAMPLE_RATE * BLOCK_S)
        while True:
            data, overflowed = self.stream.read(frames)
            yield bytes(data)

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def _stdin_blocks(rate: int, channels: int):
    """16 kHz mono PCM blocks from raw PCM on stdin (converted block by block)."""
    frame = 2 * channels
    size = max(frame, int(rate * BLOCK_S) * frame)
    pending = b""
    while True:
        chunk = sys.stdin.buffer.read(size)
        if not chunk:
            break
        data = pending + chunk
        whole = len(data) // frame * frame
        pending = data[whole:]
        if whole:
            yield from_pcm(data[:whole], rate, channels, "stdin").pcm16()
    if pending:
        raise AudioError(f"stdin: {len(pending)} trailing byte(s) are not a whole {channels}-channel "
                         "16-bit frame: not raw 16-bit PCM?")


class VoiceQuery:
    """Recognise, check and publish; counts what was refused."""

    def __init__(self, opts: argparse.Namespace, recognizer, log: Log, publisher=None) -> None:
        self.opts, self.recognizer, self.log, self.publisher = opts, recognizer, log, publisher
        self.published, self.refused = 0, 0

    def handle(self, audio: Audio) -> None:
        for note in audio.notes:
            self.log.info(f"{audio.source}: {note}")
        try:
            check_speech(audio)
        except AudioError as exc:
            return self._refuse(str(exc))
        transcript = self.recognizer.transcribe(audio.pcm16())
        if not transcript.text:
            return self._refuse(f"{audio.source}: no words recognised in {audio.seconds:.1f} s of audio")
        if transcript.confidence < self.opts.min_confidence:
            return self._refuse(f"{audio.source}: heard {transcript.text!r} with confidence "
                                f"{transcript.confidence:.2f} < --min-confidence {self.opts.min_confidence:g}")
        self.publish(transcript, audio)

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self.log.warning(f"{reason}; no query published")

    def publish(self, transcript, audio: Audio) -> None:
        heard = (f"heard {transcript.text!r} in {audio.source} ({audio.seconds:.1f} s of audio, "
                 f"recognised in {transcript.seconds:.2f} s, confidence {transcript.confidence:.2f})")
        if self.publisher is None:
            print(transcript.text, flush=True)
            self.log.info(heard)
            return
        from rclpy.duration import Duration
        from std_msgs.msg import String

        self.publisher.publish(String(data=transcript.text))
        self.published += 1
        self.log.info(f"{heard} -> {self.publisher.topic_name}")
        if not self.publisher.wait_for_all_acked(Duration(seconds=5.0)):
            self.log.warning("the query was not acknowledged by every subscriber within 5 s")

    def stream(self, blocks, source: str) -> None:
        """Cut a 16 kHz mono PCM stream into utterances and handle each."""
        cutter, open_bytes, count = Utterances(), 0, 0
        limit = int(MAX_UTTERANCE_S * SAMPLE_RATE * 2)

        def handle(pcm: bytes) -> None:
            nonlocal count
            count += 1
            self.handle(Audio(np.frombuffer(pcm, "<i2").copy(), SAMPLE_RATE, f"{source} utterance {count}"))

        for block in blocks:
            done = cutter.feed(block)
            open_bytes = 0 if done else open_bytes + len(block)
            for pcm in done:
                handle(pcm)
            if open_bytes > limit:  # never paused: take what there is
                for pcm in cutter.finish():
                    handle(pcm)
                cutter, open_bytes = Utterances(), 0
        for pcm in cutter.finish():
            handle(pcm)
        if not count:
            self._refuse(f"{source}: no speech found in the stream")


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    try:
        from rclpy.utilities import remove_ros_args

        argv = remove_ros_args(argv)
    except ImportError:
        pass
    opts = build_parser().parse_args(argv[1:])
    log = Log()
    if opts.stdin and not (8000 <= opts.rate <= 192000 and 1 <= opts.channels <= 16):
        print("voice_query: error: --rate must be 8000-192000 Hz and --channels 1-16", file=sys.stderr)
        return 2
    mic = None
    try:
        if opts.mic is not None:
            mic = Microphone(opts.mic)  # a missing or busy device is an error before anything else
        vocabulary = QueryVocabulary.from_file(opts.vocabulary) if opts.vocabulary else None
        recognizer = make_recognizer(opts.engine, vocabulary=vocabulary, bias=not opts.no_bias,
                                     whisper_model=opts.whisper_model)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"voice_query: error: {exc}", file=sys.stderr)
        return 1
    log.info(f"recognising with {recognizer.engine}")
    node = None
    if not opts.dry_run:
        import rclpy
        from std_msgs.msg import String

        from keyseg_ros.node import qos
        from keyseg_ros.tools.common import topic_prefix, wait_for_subscriber

        rclpy.init(args=args)
        node = rclpy.create_node("keyseg_voice_query")
        log.node = node
        namespace = topic_prefix(opts.namespace)
        publisher = node.create_publisher(String, f"{namespace}/query", qos.query_publisher())
        if not wait_for_subscriber(node, publisher, opts.wait):
            message = (f"nobody subscribes to {publisher.topic_name} after {opts.wait:g} s "
                       "(is keyseg_node running and active, in the same ROS_DOMAIN_ID?)")
            if mic is None:
                print(f"voice_query: error: {message}", file=sys.stderr)
                node.destroy_node()
                rclpy.try_shutdown()
                return 1
            log.warning(message + "; listening anyway (the last query is kept for it)")
    else:
        publisher = None
    tool = VoiceQuery(opts, recognizer, log, publisher)
    try:
        if opts.wav:
            for path in opts.wav:
                try:
                    audio = read_wav(path)
                except AudioError as exc:
                    tool._refuse(str(exc))
                    continue
                tool.handle(audio)
        elif opts.stdin:
            try:
                tool.stream(_stdin_blocks(opts.rate, opts.channels), "stdin")
            except AudioError as exc:
                tool._refuse(str(exc))
        else:
            log.info(f"listening to {mic.name} (Ctrl-C to stop)")
            tool.stream(mic.blocks(), f"microphone {mic.name}")
    except KeyboardInterrupt:
        pass
    except Exception:  # noqa: BLE001 - Ctrl-C shut rclpy down in the middle of a publish
        if node is None or _ros_ok():
            raise
    finally:
        if mic is not None:
            mic.close()
        if node is not None:
            import rclpy

            node.destroy_node()
            rclpy.try_shutdown()
    return 3 if tool.refused else 0


def _ros_ok() -> bool:
    import rclpy

    return rclpy.ok()


if __name__ == "__main__":
    sys.exit(main())
