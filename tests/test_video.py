"""Videos through the photo pipeline (ciaosr/video.py): streams copied, timestamps, rotation, sizes, segments that
resume and split across ranks, bad videos named. Clips are made here with PyAV: 48x32, 12 frames."""
import os
import re
from fractions import Fraction

import cv2
import numpy as np
import pytest

from ciaosr import flicker, image_io, pipeline, video
from ciaosr import upscale as cli

av = pytest.importorskip('av', reason='PyAV is not installed (extra `video`)')

FRAMES = 12
WIDTH = 48
VFR_PTS = [0, 100, 200, 400, 500, 700, 800, 1000, 1100, 1300, 1400, 1600]  # in 1/1200 s: 12, 6 and 4 frames/s


def make_clip(path, *, audio=True, subtitles=True, pts=None, rotation=0, frames=FRAMES, video_stream=True):
    """A 48x32 H.264 clip of a moving gradient, keyframes every 4 frames, with a 1 s sine tone (AAC) and a subtitle
    (MKV: SubRip), at 12 frames/s or at the given pts (in 1/1200 s)."""
    yy, xx = np.mgrid[0:32, 0:48]
    with av.open(str(path), 'w') as out:
        if video_stream:
            stream = out.add_stream('libx264', rate=12, options={'crf': '20'})
            stream.width, stream.height, stream.pix_fmt = WIDTH, 32, 'yuv420p'
            stream.codec_context.gop_size = 4
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1200)
            if rotation:
                stream.set_display_rotation(rotation)
        if audio:
            tone = out.add_stream('aac', rate=8000, layout='mono')
        if subtitles:
            text = out.add_mux_stream('subrip')
            text.time_base = Fraction(1, 1000)
        if video_stream:
            for k in range(frames):
                rgb = np.dstack([(xx * 5 + 9 * k) % 256, yy * 7, (xx + yy) * 3]).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
                frame.pts, frame.time_base = (pts[k] if pts else 100 * k), Fraction(1, 1200)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        if audio:
            samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)[None]
            sound = av.AudioFrame.from_ndarray(samples, format='fltp', layout='mono')
            sound.sample_rate, sound.pts = 8000, 0
            out.mux(tone.encode(sound))
            out.mux(tone.encode(None))
        if subtitles:
            packet = av.Packet(b'Hello')
            packet.stream, packet.pts, packet.dts, packet.duration = text, 100, 100, 500
            packet.time_base = Fraction(1, 1000)
            out.mux(packet)
    return path


def packets(path, kind):
    """[(pts in seconds, bytes)] of the packets of the file's first stream of this kind, in file order."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(stream) if p.size]


def frames(path):
    """(frame times in seconds, sorted; coded (width, height); rotation) of the file's video stream."""
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
        return (sorted(float(f.pts * f.time_base) for f in decoded), (decoded[0].width, decoded[0].height),
                decoded[0].rotation)


def run(*argv, model):
    """Exit status of the CLI run in this process (PyTorch's runtime: no OpenVINO conversion; 8 GB unless given)."""
    extra = [] if '--max-memory' in argv else ['--max-memory', '8GB']
    return cli.main([str(a) for a in argv] + extra + ['--model', str(model), '--runtime', 'torch'])


def test_video_frames_timestamps_and_copied_streams(tmp_path, tiny_model, capsys):
    src = make_clip(tmp_path / 'clip.mkv', frames=6)  # through the network
    assert run('-i', src, '-o', tmp_path / 'out', '-s', 1.5, model=tiny_model) == 0
    dst = tmp_path / 'out' / 'clip_out.mkv'
    assert 'clip.mkv -> ' in capsys.readouterr().out and dst.is_file()
    times, size, _ = frames(dst)
    assert times == frames(src)[0] and len(times) == 6 and size == (72, 48)
    assert packets(dst, 'audio') == packets(src, 'audio')  # copied packet for packet
    assert packets(dst, 'subtitles') == packets(src, 'subtitles')
    assert not list((tmp_path / 'out').glob('.*'))  # no segments or temporary files left


def test_variable_frame_rate_rotation_and_size(tmp_path, tiny_model, nearest, capsys):
    src = make_clip(tmp_path / 'turned.mp4', pts=VFR_PTS, rotation=90, subtitles=False)
    assert run('-i', src, '-o', tmp_path / 'out', '--size', '49x73', model=tiny_model) == 0
    assert '(stretched x1.56 across, x1.54 down: an exact size of another shape;' in capsys.readouterr().out
    times, size, rotation = frames(tmp_path / 'out' / 'turned_out.mp4')
    assert times == [t / 1200 for t in VFR_PTS] and rotation == 90
    assert size == (74, 50)  # displayed 49x73 rounded up to even sides (50x74), stored turned
    assert packets(tmp_path / 'out' / 'turned_out.mp4', 'audio') == packets(src, 'audio')


def test_segments_start_at_keyframes_whatever_the_ranks():
    keys = [(100 * k, k % 4 == 0) for k in range(FRAMES)]
    segments = video.plan_segments(keys[::-1], min_frames=3)  # packets in any order
    assert [(s.start, s.end, s.frames) for s in segments] == [(0, 400, 4), (400, 800, 4), (800, None, 4)]
    assert [s.frames for s in video.plan_segments(keys, min_frames=5)] == [8, 4]
    assert [s.frames for s in video.plan_segments(keys, min_frames=100)] == [FRAMES]


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(video, 'SEGMENT_FRAMES', 4)


@pytest.fixture
def nearest(monkeypatch):
    """Frames upscaled by nearest-neighbour resizing instead of the network: fast."""
    def upscale(self, picture, steps, progress=None):
        h, w = steps[-1].size
        return image_io.Picture(cv2.resize(picture.pixels, (w, h), interpolation=cv2.INTER_NEAREST))

    monkeypatch.setattr(pipeline.Upscaler, 'upscale', upscale)


def test_resume_and_ranks_give_the_same_video(tmp_path, tiny_model, monkeypatch, small_segments, nearest, capsys):
    src = make_clip(tmp_path / 'clip.mp4', subtitles=False)
    assert run('-i', src, '-o', tmp_path / 'whole', '-s', 2, model=tiny_model) == 0
    whole = tmp_path / 'whole' / 'clip_out.mp4'

    assert [s.frames for s in video.probe_video(src).segments] == [7, 4, 1]  # x264 put keyframes at 0, 3, 7, 11
    calls = []
    upscale_frame = pipeline.Upscaler.upscale

    def interrupted(self, picture, steps, progress=None):
        calls.append(1)
        if len(calls) == 12:  # the first frame of the third segment
            raise KeyboardInterrupt
        return upscale_frame(self, picture, steps, progress)

    monkeypatch.setattr(pipeline.Upscaler, 'upscale', interrupted)
    assert run('-i', src, '-o', tmp_path / 'resumed', '-s', 2, model=tiny_model) == 130
    assert (f'interrupted {src}: not saved; its finished segments are kept for --skip-existing'
            in capsys.readouterr().err)
    parts = tmp_path / 'resumed' / '.clip_out.mp4.parts'
    assert not (tmp_path / 'resumed' / 'clip_out.mp4').exists()
    assert len(list(parts.glob('segment-*.mp4'))) == 2 and (parts / video.MANIFEST).is_file()
    calls.clear()
    assert run('-i', src, '-o', tmp_path / 'resumed', '-s', 2, '--skip-existing', model=tiny_model) == 0
    assert len(calls) == 1  # only the unfinished segment's frame
    assert (tmp_path / 'resumed' / 'clip_out.mp4').read_bytes() == whole.read_bytes() and not parts.exists()
    monkeypatch.setattr(pipeline.Upscaler, 'upscale', upscale_frame)
    capsys.readouterr()  # the finished video is not taken for one of another size
    assert run('-i', src, '-o', tmp_path / 'resumed', '-s', 3, '--skip-existing', model=tiny_model) == 1
    assert 'clip_out.mp4 exists at 96x64, not the 144x96 of this run; use another -o' in capsys.readouterr().err

    for rank in (1, 0):  # torchrun's ranks, one after the other: rank 1 encodes segment 1, rank 0 the others
        monkeypatch.setenv('RANK', str(rank))
        monkeypatch.setenv('WORLD_SIZE', '2')
        assert run('-i', src, '-o', tmp_path / 'ranks', '-s', 2, '--skip-existing', model=tiny_model) == 0
        out = capsys.readouterr().out
        assert ('another rank joins them' in out) == (rank == 1)
    assert (tmp_path / 'ranks' / 'clip_out.mp4').read_bytes() == whole.read_bytes()


@pytest.mark.parametrize('codec', ['h265', 'av1', 'vp9'])
def test_every_codec_writes_a_video_without_its_encoder_log(codec, tmp_path, tiny_model, nearest, capfd, monkeypatch):
    """Each --video-codec gives a playable file (AV1's join looked for an encoder named after the segments' decoder,
    libdav1d), and the encoders' own logs (x265 [info], Svt[info]: written to the terminal by the libraries) stay
    out of the output: a file gets one line."""
    src = make_clip(tmp_path / 'clip.mp4', subtitles=False, frames=4)
    monkeypatch.delenv('SVT_LOG', raising=False)
    capfd.readouterr()
    assert run('-i', src, '-o', tmp_path / 'out', '-s', 2, '--video-codec', codec, model=tiny_model) == 0
    err = capfd.readouterr().err
    times, size, _ = frames(tmp_path / 'out' / 'clip_out.mp4')
    assert times == frames(src)[0] and size == (96, 64)
    assert not [line for line in err.splitlines() if '[info]' in line or '[warn]' in line], err
    assert 'SVT_LOG' not in os.environ  # set for the encoder only


def test_a_cut_off_mkv_is_upscaled_as_far_as_it_goes_with_a_note(tmp_path, tiny_model, nearest, capsys):
    """An MKV cut off after its header (an interrupted recording) reads without an exception: its readable frames
    are upscaled, and the file's line says that FFmpeg found it cut off (it passed silently)."""
    src = make_clip(tmp_path / 'whole.mkv', frames=8)
    assert video.probe_video(src).damage is None
    cut = tmp_path / 'cut.mkv'
    cut.write_bytes(src.read_bytes()[:src.stat().st_size * 2 // 3])
    readable = video.probe_video(cut).frames
    assert 0 < readable < 8
    assert run('-i', cut, '-o', tmp_path / 'out', '-s', 2, model=tiny_model) == 0
    out = capsys.readouterr().out
    assert (f'{readable} frames, h264 crf 18' in out and '(note: FFmpeg reported "File ended prematurely" while '
            'reading it: the file may be cut off or damaged; the frames it could read were upscaled)' in out)
    assert len(frames(tmp_path / 'out' / 'cut_out.mkv')[0]) == readable


def test_bad_videos_get_one_line_and_the_batch_goes_on(tmp_path, tiny_model, monkeypatch, nearest, capsys):
    src = tmp_path / 'in'
    src.mkdir()
    make_clip(src / 'good.mkv')
    make_clip(src / 'sound_only.mkv', video_stream=False)
    make_clip(src / 'empty.mkv', frames=0, audio=False)
    whole = make_clip(tmp_path / 'whole.mp4', subtitles=False).read_bytes()
    (src / 'truncated.mp4').write_bytes(whole[:len(whole) // 2])
    (src / 'large.webm').write_bytes(make_clip(tmp_path / 'large.mkv').read_bytes())
    assert run('-i', src, '-o', tmp_path / 'out', '-s', 2, model=tiny_model) == 1
    err = capsys.readouterr().err
    assert 'sound_only.mkv: no video stream' in err
    assert 'empty.mkv: the video stream has no frames' in err
    assert 'truncated.mp4: not a readable video' in err
    assert err.count('FAILED') == 3 and (tmp_path / 'out' / 'good_out.mkv').is_file()

    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 0)  # the codecs' share alone over the budget
    assert run('-i', src / 'large.webm', '-o', tmp_path / 'out', '-s', 64, '--max-memory', '300MB',
               model=tiny_model) == 1
    assert re.search(r'large.webm: output 3072x2048: the video decoder and encoder alone need about [\d.]+ MiB, more '
                     r'than --max-memory 300 MiB allows; raise --max-memory', capsys.readouterr().err)

    real_codec = av.codec.Codec
    monkeypatch.setattr(av.codec, 'Codec', lambda name, mode: real_codec('no such codec', mode))
    assert run('-i', src / 'good.mkv', '-o', tmp_path / 'out2', '-s', 2, model=tiny_model) == 1
    assert "good.mkv: unsupported video codec 'h264'" in capsys.readouterr().err


def test_missing_pyav_names_the_extra(tmp_path, tiny_model, monkeypatch, capsys):
    src = make_clip(tmp_path / 'clip.mkv')
    monkeypatch.setitem(__import__('sys').modules, 'av', None)  # `import av` raises ImportError
    assert run('-i', src, '-o', tmp_path / 'out', model=tiny_model) == 1
    assert 'videos need the `video` extra: pip install "ciaosr[video]"' in capsys.readouterr().err



def test_flicker_is_zero_for_motion_undone_exactly():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    frames = flicker.pan_frames(photo, 32, 5)
    big = [np.repeat(np.repeat(f, 4, 0), 4, 1) for f in frames]  # a shift-equivariant x4 upscaler
    assert flicker.flicker(big, step=4, margin=8) == 0
    noisy = [f ^ rng.integers(0, 2, f.shape, dtype=np.uint8) for f in big]
    assert 0.3 < flicker.flicker(noisy, step=4, margin=8) < 0.7  # two independent 0/1 flips: mean |a - b| 0.5
    with pytest.raises(ValueError, match='too small for 5 crops of 80 pixels'):
        flicker.pan_frames(photo, 80, 5)


def test_x264_runs_without_avx512_where_the_cpu_has_it(monkeypatch):
    """x264's AVX-512 code made identical runs differ (`video.X264_WITHOUT_AVX512`): it is masked on such CPUs only
    (a mask naming instructions the CPU lacks would crash x264), whatever the emulated limit."""
    mask = {'crf': '18', 'x264-params': video.X264_WITHOUT_AVX512}
    quiet_x265 = {'crf': '18', 'x265-params': 'log-level=error'}
    for codec, flags, expected in [('h264', {'avx2', 'avx512f'}, mask),
                                   ('h264', {'avx2'}, {'crf': '18'}), ('h265', {'avx2', 'avx512f'}, quiet_x265)]:
        monkeypatch.setattr(video, 'cpu_flags', lambda emulated=True, flags=flags: frozenset(() if emulated else flags))
        assert video.encoder_options(codec, 18) == expected


def test_x264_accepts_the_mask():
    """FFmpeg only logs a warning for an x264-params value that x264 rejects and encodes on: read the log."""
    import io

    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, av.open(io.BytesIO(), 'w', format='mp4') as out:
            stream = out.add_stream('libx264', rate=12, options={'crf': '18', 'x264-params': video.X264_WITHOUT_AVX512})
            stream.width, stream.height, stream.pix_fmt = 64, 32, 'yuv420p'
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format='rgb24')))
            out.mux(stream.encode(None))
    finally:
        av.logging.set_level(level)
    assert not [message for _, _, message in logs if 'x264-params' in message or 'asm' in message], logs
