"""Upscale videos frame by frame with the photo pipeline, streaming, in segments that survive interruptions.

Every frame goes through the same `pipeline.Upscaler` (model, engine, precision, memory plan) as a photo. Frames are
decoded, upscaled and encoded one at a time (PyAV: FFmpeg's libraries, extra `video`). The video is encoded in
segments cut at the input's keyframes (`plan_segments`): each segment is a small MP4 file (MP4 keeps exact time
stamps, negative decoding times included) in a hidden folder `.NAME.parts/` beside the output, renamed into place
when complete; a manifest there records the plan. When all
segments exist they are joined, packet for packet, with the input's audio and subtitle packets (copied, not
re-encoded) into the output, which is written to a temporary file and renamed: it appears only when complete.
An interrupted run (Ctrl-C, SIGTERM, kill -9) resumes with --skip-existing from the segments it finished. Under
torchrun rank r encodes segments r, r + N, ...; whichever rank finds them all done joins them.

Timestamps (variable frame rate too), the rotation (display matrix), colour range, matrix, primaries and
transfer of the input are kept. Codecs that need even sizes get them: an odd output side is rounded up by one.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Literal

from tqdm import tqdm

from ciaosr_arch.errors import byte_size
from ciaosr_arch.files import atomic_file, atomic_path
from ciaosr_arch.runtime import cpu_flags

from . import image_io
from .pipeline import HEADROOM, Target, Upscaler, check_upscale

EXTRA = 'video'
VIDEO_SUFFIXES = ('.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi')
Encoder = Literal['libx264', 'libx265', 'libsvtav1', 'libvpx-vp9']  # FFmpeg's encoders that we use
# --video-codec
CODECS: dict[str, Encoder] = {'h264': 'libx264', 'h265': 'libx265', 'av1': 'libsvtav1', 'vp9': 'libvpx-vp9'}
DEFAULT_CRF = {'h264': 18, 'h265': 22, 'av1': 32, 'vp9': 31}  # visually near-lossless for each encoder
CONTAINERS = {'.mp4': 'mp4', '.m4v': 'mp4', '.mov': 'mov', '.mkv': 'matroska', '.webm': 'webm'}  # kept as is
FALLBACK_SUFFIX = '.mkv'  # for other inputs, and where the kept container cannot hold a stream
SEGMENT_FRAMES = 240  # a segment starts at the first input keyframe after this many frames
DECODER_FRAMES = 20  # frames the decoder may hold (references, threads), counted in the memory plan
ENCODER_FRAMES = 60  # output frames the encoder may hold (x264's look-ahead, references, threads)
YUV_BYTES = 1.5  # bytes per pixel of a 4:2:0 8-bit frame
# x264's own CPU flags without AVX-512 (its names: "AVX2" includes SSE* to AVX and BMI1/2, LZCNT; AVX-512 CPUs have
# them all). x264 165's AVX-512 code reads uninitialised memory: the same frames encoded twice in one process, with
# other allocations between, gave different P- and I-frames (10 variants in 20 encodes of a 224x64 clip on this
# machine; none with this setting, whose output equals x264's C code's). x264's assembly is bit-exact with its C.
X264_WITHOUT_AVX512 = 'asm=AVX2,FMA3'
MANIFEST = 'manifest.json'


class VideoError(ValueError):
    """A video that cannot be upscaled here; the message says why in one line."""


def require_av() -> ModuleType:
    """The `av` module (PyAV); VideoError naming the extra to install if it is missing."""
    try:
        import av
        import av.codec  # the modules of Codec and FFmpegError, named as such (`av` does not export FFmpegError)
        import av.error
        import av.logging
    except ImportError:
        raise VideoError(f'videos need the `{EXTRA}` extra: pip install "ciaosr[{EXTRA}]"') from None
    return av


def is_video(path: str | Path) -> bool:
    """Whether the file's suffix is a video container this module reads (VIDEO_SUFFIXES, any case)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Segment:
    """Frames of the input video stream with start <= pts < end (end None: to the end), `frames` of them."""
    index: int
    start: int
    end: int | None
    frames: int


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found: coded frame size in pixels, rotation (degrees counter-clockwise, as displayed),
    the video codec, the number of frames, the average frame rate, the video stream's time base, the segments
    (`plan_segments`) and `damage`: the first error FFmpeg reported while reading the packets, e.g. 'File ended
    prematurely' for a cut-off MKV, whose readable frames are upscaled (None: read cleanly)."""
    width: int
    height: int
    rotation: int
    codec: str
    frames: int
    rate: Fraction | None
    time_base: Fraction
    segments: tuple[Segment, ...]
    damage: str | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        """(h, w) as displayed: the coded size, swapped for a rotation of +-90 degrees."""
        turned = self.rotation % 180 == 90
        return (self.width, self.height) if turned else (self.height, self.width)


def plan_segments(packets: Iterable[tuple[int, bool]], min_frames: int | None = None) -> tuple[Segment, ...]:
    """Segments [Segment] of a video stream from its packets [(pts, is_keyframe)] in any order: each starts at a
    keyframe and holds at least `min_frames` (default SEGMENT_FRAMES) frames, except the last. They depend on the
    stream alone, never on the number of ranks, so any split of the work gives the same file."""
    min_frames = SEGMENT_FRAMES if min_frames is None else min_frames
    ordered = sorted(packets)
    starts = [0]
    for k, (_, key) in enumerate(ordered):
        if key and k - starts[-1] >= min_frames:
            starts.append(k)
    bounds = [*starts, len(ordered)]
    return tuple(Segment(i, ordered[a][0], ordered[b][0] if b < len(ordered) else None, b - a)
                 for i, (a, b) in enumerate(zip(bounds, bounds[1:])))


def probe_video(path: str | Path, min_frames: int | None = None) -> VideoInfo:
    """VideoInfo of the video file at `path`, from its packets (no frame is upscaled; one is decoded to check the
    codec and read the rotation). Raises VideoError (one line) for: PyAV missing, not a readable container, no
    video stream, a codec FFmpeg cannot decode, a truncated or damaged stream, no frames."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError('no video stream')
            stream = container.streams.video[0]
            name = stream.codec_context.name
            try:
                av.codec.Codec(name, 'r')
            except (av.error.FFmpegError, ValueError):
                raise VideoError(f'unsupported video codec {name!r}: FFmpeg here cannot decode it') from None
            with ffmpeg_errors() as errors:
                packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream)
                           if packet.size and packet.pts is not None]
            if not packets:
                raise VideoError('the video stream has no frames')
            size, rate, time_base = (stream.codec_context.width, stream.codec_context.height), stream.average_rate, \
                stream.time_base
            if time_base is None:
                raise VideoError('the video stream has no time base')
        with av.open(str(path)) as container:
            first = next(container.decode(container.streams.video[0]), None)
        if first is None:
            raise VideoError('no frame of the video stream can be decoded')
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f'not a readable video (truncated or damaged: {err})') from None
    return VideoInfo(*size, first.rotation % 360, name, len(packets), rate, time_base,
                     plan_segments(packets, min_frames), errors[0] if errors else None)


@contextlib.contextmanager
def ffmpeg_errors() -> Iterator[list[str]]:
    """The messages FFmpeg logs at error level or worse in this thread while the block runs (a list, filled when
    the block ends; PyAV forwards FFmpeg's log only while a level is set, and drops a message that repeats the one
    before, even from an earlier file: both are set for the block, then put back). VideoError if PyAV is missing."""
    av = require_av()
    errors: list[str] = []
    previous, skip_repeated = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        with av.logging.Capture(local=True) as logs:
            yield errors
            errors.extend(message.strip() for _, _, message in logs)  # error level or worse: the level set
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skip_repeated)


def output_display_size(info: VideoInfo, target: Target) -> tuple[int, int]:
    """(H, W) of the upscaled video of `info` as displayed: `target`'s size of the displayed input, each odd side
    rounded up (`even_size`)."""
    return even_size(target.size(info.display_size))


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) with each odd side rounded up by one pixel, as 4:2:0 video codecs need."""
    h, w = size
    return h + h % 2, w + w % 2


def pick_codec(src: str | Path, args: argparse.Namespace) -> tuple[str, int]:
    """(codec, crf) for the video `src`: --video-codec (default: vp9 for WebM, which cannot hold H.264, else h264)
    and --crf (default: DEFAULT_CRF of the codec)."""
    codec = args.video_codec or ('vp9' if Path(src).suffix.lower() == '.webm' else 'h264')
    return codec, DEFAULT_CRF[codec] if args.crf is None else args.crf


def output_suffix(src: str | Path, codec: str) -> str:
    """The output file's suffix for the video `src` encoded with `codec` (a key of CODECS): the input's own
    container where it can hold that codec and every stream that is copied (audio, subtitles), else .mkv.
    VideoError if PyAV is missing or the file is not a readable container."""
    av = require_av()
    suffix = Path(src).suffix.lower()
    fmt = CONTAINERS.get(suffix)
    if fmt is None:
        return FALLBACK_SUFFIX
    try:
        with av.open(str(src)) as container:
            copied = {stream.codec_context.name for stream in _copied_streams(container)}
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f'not a readable video ({err})') from None
    supported = av.open(os.devnull, 'w', format=fmt).supported_codecs
    return suffix if CODECS[codec] in supported and copied <= supported else FALLBACK_SUFFIX


def _copied_streams(container):
    """The audio and subtitle streams of an input container, which are copied packet for packet."""
    return [stream for stream in container.streams if stream.type in ('audio', 'subtitle')]


def settings_key(src: str | Path, size: tuple[int, int], args: argparse.Namespace) -> str:
    """A short hash of everything the encoded frames depend on: the input file (path, bytes, mtime), the output
    size, the model and precision, the engine's options and the encoder's; segments are named with it, so a
    segment of other settings is never reused."""
    stat = Path(src).stat()
    values = [str(Path(src).resolve()), stat.st_size, stat.st_mtime_ns, size, args.model, args.steps, args.tile,
              args.tile_overlap, args.fp16, args.bf16, args.int8, args.runtime, *pick_codec(src, args)]
    return hashlib.sha256(repr(values).encode()).hexdigest()[:12]


class VideoJob:
    """One video's work: the plan (sizes, segments, parts folder) for `src` -> `dst` under `args` (the CLI's: the
    output size `args.target`, a `pipeline.Target`, and the settings that name segments, `settings_key`).

    `steps` come from `upscaler.plan` for one frame: the decoder's and the encoder's frames are counted as the
    file's decoding memory. Raises VideoError, ValueError (a downscale) or MemoryError (one line).
    """

    def __init__(self, src: str | Path, dst: str | Path, upscaler: Upscaler, args: argparse.Namespace) -> None:
        self.src, self.dst, self.args = Path(src), Path(dst), args
        self.info = info = probe_video(src)
        size = output_display_size(info, args.target)
        check_upscale(info.display_size, size)
        self.display_out = size
        self.size = (size[1], size[0]) if info.rotation % 180 == 90 else size  # coded (H, W)
        self.codec, self.crf = pick_codec(src, args)
        codec_bytes = (DECODER_FRAMES * info.width * info.height
                       + ENCODER_FRAMES * self.size[0] * self.size[1]) * YUV_BYTES
        if upscaler.base + codec_bytes > HEADROOM * upscaler.budget:
            name = upscaler.names.budget
            raise MemoryError(f'output {size[1]}x{size[0]}: the video decoder and encoder alone need about '
                              f'{byte_size(codec_bytes)}, more than {name} {byte_size(upscaler.budget)} allows; '
                              f'raise {name} or lower the scale')
        frame = image_io.ImageInfo(info.width, info.height, 3, 1, int(codec_bytes))
        self.steps = upscaler.plan(frame, self.size)
        self.key = settings_key(src, self.size, args)
        self.parts = self.dst.with_name(f'.{self.dst.name}.parts')

    def segment_path(self, segment: Segment) -> Path:
        return self.parts / f'segment-{segment.index:05d}-{self.key}.mp4'

    def done(self, segment: Segment, since: float) -> bool:
        """Whether the segment's file exists and may be used: any with --skip-existing, else only one written
        since `since` (seconds since the epoch: this run's start, by another rank)."""
        path = self.segment_path(segment)
        return path.is_file() and (self.args.skip_existing or path.stat().st_mtime >= since)

    def write_manifest(self) -> None:
        """The plan as JSON in the parts folder (the same bytes from every rank)."""
        manifest = {'source': str(self.src), 'output': str(self.dst), 'size': list(self.size[::-1]),
                    'settings': self.key, 'codec': self.codec, 'crf': self.crf,
                    'segments': [[s.start, s.end, s.frames, self.segment_path(s).name] for s in self.info.segments]}
        self.parts.mkdir(parents=True, exist_ok=True)
        image_io.write_atomic(self.parts / MANIFEST, json.dumps(manifest, indent=1).encode())


def process_video(job: VideoJob, upscaler: Upscaler, since: float, rank: int = 0, world: int = 1,
                  bar_position: int = 0, prefix: str = '') -> str:
    """Upscale this rank's segments of a video (`VideoJob`), then join them if they are all done: 'done' or
    'waiting' (other ranks' segments are not done yet). `since`: this run's start in seconds since the epoch
    (segments written since then by other ranks count as done); rank r of `world` takes segments r, r + world, ...;
    the bar over frames is at `bar_position`, and lines start with `prefix`.
    Raises VideoError (a damaged stream found while decoding), ValueError or MemoryError, leaving finished
    segments for a later run."""
    start = time.perf_counter()
    job.write_manifest()
    mine = [s for s in job.info.segments if s.index % world == rank and not job.done(s, since)]
    total = sum(s.frames for s in mine)
    with tqdm(total=total, desc=f'{prefix}{job.src.name}', unit='frame', leave=False, position=bar_position,
              disable=not total) as bar:
        for segment in mine:
            _encode_segment(job, segment, upscaler, bar)
    if not all(job.done(s, since) for s in job.info.segments):
        tqdm.write(f'{prefix}{job.src}: {total} frame(s) of {len(mine)} segment(s) done; another rank joins them')
        return 'waiting'
    lock = job.parts / f'join-{job.key}.lock'
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        if lock.stat().st_mtime >= since:
            return 'waiting'  # another rank of this run is joining them
        lock.touch()  # left by an interrupted run
    _join(job)
    shutil.rmtree(job.parts, ignore_errors=True)
    h, w = job.info.display_size
    seconds = time.perf_counter() - start
    rate = f', {total / seconds:.2f} frame/s' if total else ''
    damage = (f'note: FFmpeg reported "{job.info.damage}" while reading it: the file may be cut off or damaged; '
              f'the frames it could read were upscaled') if job.info.damage else None
    notes = ''.join(f' ({note})' for note in (damage, job.args.target.stretch((h, w), job.display_out)) if note)
    tqdm.write(f'{prefix}{job.src} -> {job.dst}: {w}x{h} -> {job.display_out[1]}x{job.display_out[0]}, '
               f'{job.info.frames} frames, {job.codec} crf {job.crf} ({"; ".join(map(str, job.steps))}) '
               f'in {seconds:.1f} s{rate}{notes}')
    return 'done'


def encoder_options(codec: str, crf: int) -> dict[str, str]:
    """FFmpeg's options for the encoder of `codec` (a key of CODECS): the CRF, for x264 on a CPU with AVX-512
    X264_WITHOUT_AVX512, for x265 its log limited to errors (it writes two dozen lines per file to the terminal
    itself). SVT-AV1's log is limited by the environment instead (`encoder_environment`)."""
    options = {'crf': str(crf)}
    if CODECS[codec] == 'libx264' and 'avx512f' in cpu_flags(emulated=False):
        options['x264-params'] = X264_WITHOUT_AVX512
    elif CODECS[codec] == 'libx265':
        options['x265-params'] = 'log-level=error'
    return options


@contextlib.contextmanager
def encoder_environment(codec: str) -> Iterator[None]:
    """The environment that the encoder of `codec` (a key of CODECS) starts in, for the block: for SVT-AV1, which
    writes its log to the terminal itself (about 15 `Svt[info]` lines per file and a warning about thread
    priorities), SVT_LOG=1, errors only (read when an encoder starts; SVT-AV1's `svt_log.c`), unless the user set
    it; put back after the block."""
    if CODECS[codec] != 'libsvtav1' or 'SVT_LOG' in os.environ:
        yield
        return
    os.environ['SVT_LOG'] = '1'
    try:
        yield
    finally:
        del os.environ['SVT_LOG']


def _encode_segment(job, segment, upscaler, bar):
    """Decode the segment's frames, upscale each and encode it into the segment's MP4 file (written whole or not
    at all: `atomic_path`)."""
    av = require_av()
    try:
        with (encoder_environment(job.codec), atomic_path(job.segment_path(segment)) as temporary,
              av.open(str(job.src)) as source, av.open(str(temporary), 'w', format='mp4') as out):
            stream = source.streams.video[0]
            context = stream.codec_context
            encoder = out.add_stream(CODECS[job.codec], rate=stream.average_rate,
                                     options=encoder_options(job.codec, job.crf))
            encoder.width, encoder.height = job.size[1], job.size[0]
            encoder.pix_fmt = 'yuv420p'
            encoder.time_base = encoder.codec_context.time_base = job.info.time_base
            for name in ('color_range', 'colorspace', 'color_primaries', 'color_trc'):
                setattr(encoder.codec_context, name, getattr(context, name))
            if segment.index:
                source.seek(segment.start, stream=stream, backward=True)
            for frame in source.decode(stream):
                if frame.pts is None or frame.pts < segment.start:
                    continue
                if segment.end is not None and frame.pts >= segment.end:
                    break
                pixels = frame.to_ndarray(format='rgb24', src_color_range=frame.color_range, dst_color_range='JPEG')
                result = upscaler.upscale(image_io.Picture(pixels), job.steps).pixels
                encoded = av.VideoFrame.from_ndarray(result, format='rgb24').reformat(
                    format='yuv420p', src_color_range='JPEG', dst_colorspace=frame.colorspace or None,
                    dst_color_range=frame.color_range)
                encoded.pts, encoded.time_base = frame.pts, job.info.time_base
                out.mux(encoder.encode(encoded))
                bar.update()
            out.mux(encoder.encode(None))
    except av.error.FFmpegError as err:
        raise VideoError(f'damaged or truncated video stream ({err})') from None


def _join(job):
    """Write the output: the segments' video packets and the input's audio and subtitle packets, interleaved by
    time, with the rotation, into a temporary file renamed over job.dst when complete."""
    av = require_av()
    segments = [av.open(str(job.segment_path(s))) for s in job.info.segments]
    fmt = CONTAINERS.get(job.dst.suffix.lower(), 'matroska')
    try:
        with av.open(str(job.src)) as source, atomic_file(job.dst) as file, av.open(file, 'w', format=fmt) as out:
            # opaque: the codec's parameters as they are (else PyAV looks for an encoder named after the segments'
            # decoder, e.g. libdav1d for AV1, and fails)
            video = out.add_stream_from_template(segments[0].streams.video[0], opaque=True)
            video.time_base = source.streams.video[0].time_base
            if job.info.rotation:
                video.set_display_rotation(job.info.rotation)
            copied = _copied_streams(source)
            outputs = {stream.index: out.add_stream_from_template(stream) for stream in copied}
            for stream in copied:
                outputs[stream.index].time_base = stream.time_base
            last_dts = None
            for packet in _interleave(_segment_packets(segments), source.demux(copied) if copied else iter(())):
                if packet.stream.type == 'video':
                    if last_dts is not None and packet.dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1  # segments' encoder delays meet; pts are untouched
                    last_dts = packet.dts
                    packet.stream = video
                else:
                    packet.stream = outputs[packet.stream.index]
                out.mux(packet)
    except av.error.FFmpegError as err:
        raise VideoError(f'cannot write {job.dst.name} ({err})') from None
    finally:
        for segment in segments:
            segment.close()


def _segment_packets(segments):
    for container in segments:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                yield packet


def _interleave(*sources):
    """Packets of several demuxers merged in time order (dts, else pts, in seconds); each source in its order."""
    heads = {}
    for k, source in enumerate(sources):
        heads[k] = next(source, None)
    while any(head is not None for head in heads.values()):
        k = min((k for k, head in heads.items() if head is not None), key=lambda k: _seconds(heads[k]))
        packet, heads[k] = heads[k], next(sources[k], None)
        if packet.size:
            yield packet


def _seconds(packet):
    stamp = packet.dts if packet.dts is not None else packet.pts
    return -math.inf if stamp is None else float(stamp * packet.time_base)
