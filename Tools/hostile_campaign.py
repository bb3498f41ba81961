#!/usr/bin/env python3
"""Run thousands of mutated model files, images and checkpoints through the built tools.

Each input is one targeted mutation of a valid file: header, directory and metadata fields of a model
file (checksums recomputed so the reader gets past them, or not), JSON values of the configs inside
it, truncations, bit flips, tensor bytes; image headers, chunks and bytes; checkpoint configs,
safetensors headers, weights and tokenizer files; and special files (FIFOs, directories, devices).

Every run must end with status 0 or 1 (never a signal, a trap or a usage error), within the time
limit, under the memory limit, with a message on standard error when it fails and nothing on standard
output; a failed conversion must leave nothing behind, and a model file the converter accepts must
caption. Prints the figures and exits non-zero on any violation (details in the report file).

    swift build -c release && python3 Tools/hostile_campaign.py --count 3000
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blip2file import ModelFile, crc32c  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 31, 32, 33, 63, 64, 255, 256, 4095, 4096, 65535, 65536, 1 << 20, (1 << 31) - 1, 1 << 31,
                    (1 << 32) - 1, 1 << 32, (1 << 53) + 1, (1 << 63) - 1, -(1 << 63), 10 ** 12]
INTERESTING_JSON = INTERESTING_INTS + [0.5, -0.0, 1.5, 1e-300, 1e300, 1e999, -1e999, None, True, False, "", "x", "llama",
                                       "gelu_new", [], [1], [0, 0, 0], {}, {"height": 0}, "A" * 5000]


class Campaign:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.blip2 = str(args.build / "blip2")
        self.quantize = str(args.build / "blip2-quantize")
        self.scratch = Path(tempfile.mkdtemp(prefix="blip2-hostile-"))
        self.runs = 0
        self.by_status = {}
        self.peak_kb = 0
        self.peak_case = ""
        self.slowest = (0.0, "")
        self.violations = []
        self.accepted_conversions = 0

    # -- running one command
    def run(self, argv, case, expect_output_on_failure=False):
        """Runs argv, checks the result, returns (status, stdout, stderr)."""
        out_path, err_path = self.scratch / "stdout", self.scratch / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.monotonic()
            process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "SWIFT_BACKTRACE": "enable=no"}, start_new_session=True)
            status, usage, timed_out = None, None, False
            while status is None:
                pid, raw, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    status = raw
                    break
                if time.monotonic() - started > self.args.timeout:
                    os.killpg(process.pid, signal.SIGKILL)
                    _, status, usage = os.wait4(process.pid, 0)
                    timed_out = True
                    break
                time.sleep(0.002)
            elapsed = time.monotonic() - started
        stdout, stderr = out_path.read_bytes().decode(errors="replace"), err_path.read_bytes().decode(errors="replace")
        self.runs += 1
        code = os.waitstatus_to_exitcode(status)
        self.by_status[code] = self.by_status.get(code, 0) + 1
        if usage.ru_maxrss > self.peak_kb:
            self.peak_kb, self.peak_case = usage.ru_maxrss, case
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, case)
            if self.args.keep_slowest:
                # Keep the inputs of the slowest run so far (the files its arguments name) to look into.
                keep = Path(self.args.keep_slowest)
                shutil.rmtree(keep, ignore_errors=True)
                keep.mkdir(parents=True)
                for arg in argv[1:]:
                    if Path(arg).is_file() and str(arg).startswith(str(self.scratch)):
                        shutil.copy(arg, keep / Path(arg).name)
        problems = []
        if timed_out:
            problems.append(f"hung: killed after {self.args.timeout} s")
        elif code not in (0, 1):
            problems.append(f"status {code}")
        if usage.ru_maxrss > self.args.max_rss_mb * 1024:
            problems.append(f"peak memory {usage.ru_maxrss // 1024} MB")
        if code == 1 and not stderr.strip():
            problems.append("failed without a message")
        if code == 1 and stdout and not expect_output_on_failure:
            problems.append("printed results and failed")
        for marker in ("Fatal error", "crashed", "Illegal instruction", "Precondition failed", "ERROR: AddressSanitizer"):
            if marker in stderr:
                problems.append(f"stderr shows '{marker}'")
        if problems:
            self.violations.append(dict(case=case, argv=argv, problems=problems, stderr=stderr[-2000:]))
        return code, stdout, stderr

    # -- model files
    def model_commands(self, path, case):
        image = str(ROOT / "Models/examples/single-42-4.png")
        self.run([self.blip2, "inspect", path, "--json"], case + " | inspect --json")
        self.run([self.blip2, "inspect", path, "--verify"], case + " | inspect --verify", expect_output_on_failure=True)
        self.run([self.blip2, "caption", path, image, "--max-new-tokens", "4"], case + " | caption")

    def mutate_model(self, base):
        m = ModelFile(base)
        kind = self.rng.choice(["header", "header", "directory", "directory", "json", "json", "json", "json", "sections",
                                "truncate", "flip", "flip-fixed", "tensor-bytes"])
        rng = self.rng
        if kind == "header":
            field = rng.choice(["format_version", "header_size", "file_size", "data_offset", "data_size", "directory_offset",
                                "directory_size", "metadata_offset", "metadata_size", "tensor_count", "page_alignment", "reserved"])
            if field == "reserved":
                raw = bytearray(36)
                raw[rng.randrange(36)] = rng.randrange(1, 256)
                m.header[field] = bytes(raw)
            else:
                width = 64 if field.endswith(("size", "offset")) and field != "header_size" else 32
                value = rng.choice(INTERESTING_INTS + [m.header[field] + rng.choice([-65, -64, -1, 1, 63, 64, 4096])])
                m.header[field] = value % (1 << width)
            m.fix_header()
            return m.data, f"header {field}"
        if kind == "directory":
            entries = m.directory()
            entry = rng.choice(entries)
            raw = bytearray(m.region("directory"))
            start = entry["entry_offset"]
            name_length = len(entry["name"].encode())
            fields = {"name_length": (start, "<H"), "type": (start + 2 + name_length, "<B"), "compression": (start + 3 + name_length, "<B"),
                      "rank": (start + 4 + name_length, "<B"), "reserved": (start + 5 + name_length, "<B"),
                      "block": (start + 6 + name_length, "<I")}
            base_offset = start + 10 + name_length
            for i in range(len(entry["shape"])):
                fields[f"shape[{i}]"] = (base_offset + 8 * i, "<Q")
            after = base_offset + 8 * len(entry["shape"])
            fields.update({"offset": (after, "<Q"), "size": (after + 8, "<Q"), "stored_size": (after + 16, "<Q"), "crc32c": (after + 24, "<I")})
            field = rng.choice(list(fields))
            position, fmt = fields[field]
            bits = struct.calcsize(fmt) * 8
            current = struct.unpack_from(fmt, raw, position)[0]
            value = rng.choice(INTERESTING_INTS + [current + rng.choice([-64, -1, 1, 64]), current * 2, current // 2]) % (1 << bits)
            struct.pack_into(fmt, raw, position, value)
            m.set_directory(bytes(raw))
            return m.data, f"directory {entry['name']} {field}={value}"
        if kind == "json":
            sections = m.sections()
            name, body = rng.choice([s for s in sections if s[0] != "quantization"] + sections[:1] * 3)
            doc = json.loads(body)
            path = self.random_path(doc)
            if not path:
                return m.data, "json (empty)"
            value = rng.choice(INTERESTING_JSON)
            delete = rng.random() < 0.1
            m.edit_json(name, path, value, delete=delete)
            return m.data, f"json {name}.{'.'.join(map(str, path))}={'<deleted>' if delete else repr(value)[:40]}"
        if kind == "sections":
            sections = m.sections()
            choice = rng.randrange(4)
            if choice == 0:
                sections = [s for s in sections if s[0] != rng.choice(sections)[0]]
            elif choice == 1:
                sections = sections + [rng.choice(sections)]
            elif choice == 2:
                i = rng.randrange(len(sections))
                sections[i] = (sections[i][0], sections[i][1][: rng.randrange(len(sections[i][1]) + 1)])
            else:
                i = rng.randrange(len(sections))
                sections[i] = (rng.choice(["", "x" * 300, "config", "tokenizer"]), sections[i][1])
            m.set_sections(sections)
            return m.data, f"sections variant {choice}"
        if kind == "truncate":
            points = [0, 7, 8, 127, 128, 129, m.header["directory_offset"], m.header["metadata_offset"], len(m.data) - 1,
                      rng.randrange(len(m.data))]
            cut = rng.choice(points)
            return m.data[:cut], f"truncated at {cut}"
        if kind in ("flip", "flip-fixed"):
            data = m.data
            region = rng.choice(["header", "directory", "metadata", "anywhere"])
            lo, hi = {"header": (0, 128), "directory": (m.header["directory_offset"], m.header["metadata_offset"]),
                      "metadata": (m.header["metadata_offset"], len(data)), "anywhere": (0, len(data))}[region]
            for _ in range(rng.choice([1, 1, 2, 8])):
                data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
            if kind == "flip-fixed":
                m2 = ModelFile(data)
                m2.fix_directory_crc()
                m2.fix_metadata_crc()
                data = m2.data
            return data, f"{kind} in {region}"
        # Tensor bytes: the runtime does not checksum data at load (inspect --verify does).
        entry = rng.choice(m.directory())
        data = m.data
        fill = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x80\x7f", b"\x00\x7c", b"\xff\x7f", b"\x00\x00"])
        for _ in range(rng.choice([1, 4, 64])):
            at = entry["offset"] + rng.randrange(max(1, entry["stored_size"] - len(fill)))
            data[at:at + len(fill)] = fill
        return data, f"tensor bytes {entry['name']} <- {fill.hex()}"

    def random_path(self, doc, depth=0):
        """A random key path to a value inside a JSON document."""
        if isinstance(doc, dict) and doc and depth < 4:
            key = self.rng.choice(list(doc))
            if self.rng.random() < 0.7 and isinstance(doc[key], (dict, list)) and doc[key]:
                rest = self.random_path(doc[key], depth + 1)
                return [key] + rest if rest else [key]
            return [key]
        if isinstance(doc, list) and doc and depth < 4:
            return None  # lists are replaced whole by their parent key
        return None

    def special_files(self):
        fifo = self.scratch / "special.fifo"
        os.mkfifo(fifo)
        folder = self.scratch / "folder.blip2"
        folder.mkdir()
        empty = self.scratch / "empty.blip2"
        empty.write_bytes(b"")
        loop = self.scratch / "loop.blip2"
        os.symlink(loop, loop)
        image = str(ROOT / "Models/examples/single-42-4.png")
        model = str(ROOT / "Models/demo-q8.blip2")
        for path in (fifo, folder, empty, loop, Path("/dev/zero"), Path("/dev/null"), self.scratch / "missing.blip2"):
            self.model_commands(str(path), f"special model {path.name}")
            self.run([self.blip2, "caption", model, str(path)], f"special image {path.name}")
        checkpoint = self.fresh_checkpoint()
        for name in ("config.json", "model.safetensors", "vocab.json", "preprocessor_config.json"):
            target = checkpoint / name
            target.unlink()
            os.mkfifo(target)
            self.convert(checkpoint, f"special checkpoint file {name} (FIFO)")
            target.unlink()
            shutil.copy(ROOT / "Tests/Fixtures/models/base-f32/checkpoint" / name, target)

    # -- images
    def mutate_image(self, sources):
        source = self.rng.choice(sources)
        data = bytearray(source.read_bytes())
        rng = self.rng
        kind = rng.choice(["flip", "truncate", "dims", "dims", "length", "splice"])
        if kind == "flip":
            for _ in range(rng.choice([1, 2, 16])):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            data = data[: rng.choice([0, 1, 2, 3, 4, 20, rng.randrange(len(data))])]
        elif kind == "dims":
            width, height = rng.choice([(8000, 8000), (65535, 65535), (0, 10), (10, 0), (1, 65535), (7999, 1)])
            if data[:2] == b"\xff\xd8":
                i = 2
                while i + 9 < len(data):
                    marker, length = data[i + 1], data[i + 2] << 8 | data[i + 3]
                    if marker in (0xC0, 0xC1, 0xC2):
                        data[i + 5:i + 9] = struct.pack(">HH", height, width)
                        break
                    i += 2 + length
            else:
                data[16:24] = struct.pack(">II", width, height)
                data[29:33] = struct.pack(">I", crc32c_png(data[12:29]))
        elif kind == "length":
            at = rng.randrange(max(1, len(data) - 4))
            data[at:at + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"\x00\x01"])
        else:
            other = rng.choice(sources).read_bytes()
            cut = rng.randrange(len(data))
            data = data[:cut] + other[rng.randrange(len(other)):]
        return bytes(data), f"image {source.name} {kind}"

    # -- checkpoints
    def fresh_checkpoint(self):
        folder = self.scratch / "checkpoint"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(ROOT / "Tests/Fixtures/models/base-f32/checkpoint", folder)
        return folder

    def convert(self, checkpoint, case):
        out_folder = self.scratch / "converted"
        shutil.rmtree(out_folder, ignore_errors=True)
        out_folder.mkdir()
        output = out_folder / "model.blip2"
        weights = self.rng.choice(["f32", "f16", "q8", "q4", "mixed"])
        compress = self.rng.choice(["none", "none", "zstd"])
        code, _, _ = self.run([self.quantize, str(checkpoint), "--output", str(output), "--weights", weights, "--compress", compress,
                               "--threads", "1"], f"{case} | quantize {weights} {compress}")
        left = sorted(p.name for p in out_folder.iterdir())
        if code != 0 and left:
            self.violations.append(dict(case=case, problems=[f"failed conversion left {left}"]))
        if code == 0:
            self.accepted_conversions += 1
            image = str(ROOT / "Tests/Fixtures/models/images/circle.png")
            ok, _, stderr = self.run([self.blip2, "caption", str(output), image, "--max-new-tokens", "4"], case + " | caption converted")
            if ok != 0:
                self.violations.append(dict(case=case, problems=["accepted checkpoint gives a model file that cannot caption"],
                                            stderr=stderr[-2000:]))

    def mutate_checkpoint(self):
        folder = self.fresh_checkpoint()
        rng = self.rng
        kind = rng.choice(["config", "config", "preprocessor", "safetensors-header", "weights", "weights", "tokenizer", "truncate"])
        if kind in ("config", "preprocessor"):
            name = "config.json" if kind == "config" else "preprocessor_config.json"
            doc = json.loads((folder / name).read_text())
            path = self.random_path(doc)
            value = rng.choice(INTERESTING_JSON)
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            (folder / name).write_text(json.dumps(doc))
            return folder, f"checkpoint {name} {'.'.join(path)}={repr(value)[:40]}"
        weights = folder / "model.safetensors"
        data = bytearray(weights.read_bytes())
        header_length = struct.unpack_from("<Q", data, 0)[0]
        header = json.loads(data[8:8 + header_length])
        names = [k for k in header if k != "__metadata__"]
        if kind == "safetensors-header":
            name = rng.choice(names)
            field = rng.choice(["dtype", "shape", "data_offsets", "delete", "rename"])
            if field == "dtype":
                header[name]["dtype"] = rng.choice(["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "Q4", ""])
            elif field == "shape":
                shape = header[name]["shape"]
                if shape:
                    shape[rng.randrange(len(shape))] = rng.choice(INTERESTING_INTS + [0.5, "1", None])
                else:
                    header[name]["shape"] = [rng.choice(INTERESTING_INTS)]
            elif field == "data_offsets":
                header[name]["data_offsets"][rng.randrange(2)] = rng.choice(INTERESTING_INTS + [len(data)])
            elif field == "delete":
                del header[name]
            else:
                header[name + ".x"] = header.pop(name)
            text = json.dumps(header).encode()
            data = bytearray(struct.pack("<Q", len(text))) + text + data[8 + header_length:]
            weights.write_bytes(data)
            return folder, f"checkpoint safetensors {name} {field}"
        if kind == "weights":
            name = rng.choice(names)
            begin, end = header[name]["data_offsets"]
            value = rng.choice([float("nan"), float("inf"), -float("inf"), 3e38, -70000.0, 65504.0, 1e-45, 0.0])
            for _ in range(rng.choice([1, 3])):
                at = 8 + header_length + begin + 4 * rng.randrange(max(1, (end - begin) // 4))
                data[at:at + 4] = struct.pack("<f", value)
            weights.write_bytes(data)
            return folder, f"checkpoint weight {name} <- {value}"
        if kind == "tokenizer":
            name = rng.choice(["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"])
            text = bytearray((folder / name).read_bytes())
            variant = rng.randrange(4)
            if variant == 0:
                text = text[: rng.randrange(len(text) + 1)]
            elif variant == 1:
                for _ in range(4):
                    text[rng.randrange(len(text))] = rng.randrange(256)
            elif variant == 2:
                text += b"\n" + bytes(rng.randrange(256) for _ in range(20))
            else:
                text = text.replace(b"1", b"99999999999", 1)
            (folder / name).write_bytes(text)
            return folder, f"checkpoint {name} variant {variant}"
        cut = rng.randrange(len(data))
        weights.write_bytes(data[:cut])
        return folder, f"checkpoint safetensors truncated at {cut}"

    # -- the campaign
    def go(self):
        counts = dict(model=int(self.args.count * 0.5), image=int(self.args.count * 0.25))
        counts["checkpoint"] = self.args.count - counts["model"] - counts["image"]
        bases = [ROOT / "Models/demo-q8.blip2"] + sorted((ROOT / "Tests/Fuzz/corpus/model-file").glob("*.blip2"))
        base_bytes = [p.read_bytes() for p in bases]
        model_path = str(self.scratch / "mutated.blip2")
        started = time.monotonic()
        for i in range(counts["model"]):
            data, case = self.mutate_model(self.rng.choice(base_bytes[:1] * 3 + base_bytes[1:]))
            Path(model_path).write_bytes(data)
            self.model_commands(model_path, f"model #{i}: {case}")
        images = sorted((ROOT / "Tests/Fixtures/images/inputs").glob("*.jpg")) + sorted((ROOT / "Tests/Fixtures/images/inputs").glob("*.png"))
        images = [p for p in images if 0 < p.stat().st_size < 200_000]
        image_path = self.scratch / "mutated-image"
        model = str(ROOT / "Models/demo-q8.blip2")
        for i in range(counts["image"]):
            data, case = self.mutate_image(images)
            image_path.write_bytes(data)
            self.run([self.blip2, "caption", model, str(image_path), "--max-new-tokens", "4"], f"image #{i}: {case}")
        for i in range(counts["checkpoint"]):
            folder, case = self.mutate_checkpoint()
            self.convert(folder, f"checkpoint #{i}: {case}")
        self.special_files()
        elapsed = time.monotonic() - started
        report = dict(inputs=self.args.count, runs=self.runs, seconds=round(elapsed, 1), by_status=self.by_status,
                      peak_rss_mb=round(self.peak_kb / 1024, 1), peak_case=self.peak_case,
                      slowest_seconds=round(self.slowest[0], 2), slowest_case=self.slowest[1],
                      accepted_conversions=self.accepted_conversions, violations=self.violations)
        Path(self.args.report).write_text(json.dumps(report, indent=1))
        print(f"{self.args.count} mutated inputs, {self.runs} runs in {elapsed:.0f} s; exit statuses {self.by_status}")
        print(f"peak memory {self.peak_kb / 1024:.0f} MB ({self.peak_case}); slowest {self.slowest[0]:.2f} s ({self.slowest[1]})")
        print(f"conversions accepted and captioned: {self.accepted_conversions}; violations: {len(self.violations)} (report: {self.args.report})")
        for v in self.violations[:20]:
            print(f"  {v['case']}: {', '.join(v['problems'])}")
        shutil.rmtree(self.scratch, ignore_errors=True)
        return 1 if self.violations else 0


def crc32c_png(data):
    """PNG chunks use the standard CRC-32 (zlib), not CRC-32C."""
    import zlib
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="mutated inputs (half model files, a quarter images, a quarter checkpoints)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--build", type=Path, default=ROOT / ".build" / "release", help="folder with blip2 and blip2-quantize")
    parser.add_argument("--timeout", type=float, default=60, help="seconds before a run counts as hung")
    parser.add_argument("--max-rss-mb", type=int, default=1024)
    parser.add_argument("--report", default="/tmp/blip2-hostile-report.json")
    parser.add_argument("--keep-slowest", help="folder to copy the slowest run's input files into")
    return Campaign(parser.parse_args()).go()


if __name__ == "__main__":
    sys.exit(main())
