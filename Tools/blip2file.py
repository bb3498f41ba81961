"""Reads and rewrites blip2 model files (docs/FORMAT.md) for hostile-input testing: edit a header field,
a directory entry or a metadata section, then recompute the checksums so the reader gets past them.

Independent of the Swift reader on purpose: it follows the specification, not the code under test.
"""
import json
import struct

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


HEADER = struct.Struct("<8sII7QIIII36sI")  # magic .. page_alignment, reserved, header_crc32c
FIELDS = ["magic", "format_version", "header_size", "file_size", "data_offset", "data_size", "directory_offset",
          "directory_size", "metadata_offset", "metadata_size", "tensor_count", "directory_crc32c",
          "metadata_crc32c", "page_alignment", "reserved", "header_crc32c"]
assert HEADER.size == 128


class ModelFile:
    def __init__(self, data):
        self.data = bytearray(data)
        self.header = dict(zip(FIELDS, HEADER.unpack_from(self.data, 0)))

    @classmethod
    def read(cls, path):
        with open(path, "rb") as f:
            return cls(f.read())

    # -- regions
    def region(self, name):
        start = self.header[f"{name}_offset"]
        return bytes(self.data[start:start + self.header[f"{name}_size"]])

    def sections(self):
        raw = self.region("metadata")
        count, = struct.unpack_from("<I", raw, 0)
        pos, out = 4, []
        for _ in range(count):
            n, = struct.unpack_from("<H", raw, pos); pos += 2
            name = raw[pos:pos + n].decode(); pos += n
            length, = struct.unpack_from("<Q", raw, pos); pos += 8
            out.append((name, raw[pos:pos + length])); pos += length
        return out

    def directory(self):
        raw = self.region("directory")
        pos, out = 0, []
        for _ in range(self.header["tensor_count"]):
            start = pos
            n, = struct.unpack_from("<H", raw, pos); pos += 2
            name = raw[pos:pos + n].decode(); pos += n
            etype, comp, rank, reserved, block = struct.unpack_from("<BBBBI", raw, pos); pos += 8
            shape = list(struct.unpack_from(f"<{rank}Q", raw, pos)); pos += 8 * rank
            offset, size, stored, crc = struct.unpack_from("<QQQI", raw, pos); pos += 28
            out.append(dict(name=name, type=etype, compression=comp, reserved=reserved, block=block, shape=shape,
                            offset=offset, size=size, stored_size=stored, crc32c=crc, entry_offset=start))
        return out

    # -- rewriting
    def set_sections(self, sections):
        """Replaces the metadata region (it is last in the file) and fixes sizes and checksums."""
        raw = struct.pack("<I", len(sections))
        for name, body in sections:
            encoded = name.encode()
            raw += struct.pack("<H", len(encoded)) + encoded + struct.pack("<Q", len(body)) + body
        start = self.header["metadata_offset"]
        del self.data[start:]
        self.data += raw
        self.header["metadata_size"] = len(raw)
        self.header["metadata_crc32c"] = crc32c(raw)
        self.header["file_size"] = len(self.data)
        self.fix_header()

    def edit_json(self, section, path, value, delete=False):
        """Sets (or deletes) the JSON value at `path` (a list of keys) in a metadata section."""
        sections = []
        for name, body in self.sections():
            if name == section:
                doc = json.loads(body)
                node = doc
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                if delete:
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = value
                body = json.dumps(doc).encode()
            sections.append((name, body))
        self.set_sections(sections)

    def set_directory(self, raw):
        start = self.header["directory_offset"]
        assert len(raw) == self.header["directory_size"], "directory edits keep its size"
        self.data[start:start + len(raw)] = raw
        self.header["directory_crc32c"] = crc32c(raw)
        self.fix_header()

    def fix_directory_crc(self):
        self.header["directory_crc32c"] = crc32c(self.region("directory"))
        self.fix_header()

    def fix_metadata_crc(self):
        self.header["metadata_crc32c"] = crc32c(self.region("metadata"))
        self.fix_header()

    def fix_header(self):
        values = [self.header[f] for f in FIELDS]
        packed = bytearray(HEADER.pack(*values))
        packed[124:128] = struct.pack("<I", crc32c(packed[:124]))
        self.header["header_crc32c"], = struct.unpack_from("<I", packed, 124)
        self.data[0:128] = packed

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.data)
