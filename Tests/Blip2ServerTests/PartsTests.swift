import Foundation
import Testing
@testable import Blip2Server

@Suite("server parts")
struct PartsTests {
    @Test("SHA-256 matches FIPS 180-4's examples and Python's hashlib")
    func sha256() {
        #expect(SHA256.hex(Array("".utf8)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // hashlib.sha256(b"a" * 1000).hexdigest(): several blocks.
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test("the cache drops the least recently used entry past its capacity, and expired ones")
    func boundedCache() {
        var clock = 0.0
        let cache = BoundedCache<Int>(capacity: 2, timeToLive: 10, now: { clock })
        cache.put("a", 1)
        cache.put("b", 2)
        #expect(cache.get("a") == 1)  // a is now more recent than b
        cache.put("c", 3)
        #expect(cache.get("b") == nil)
        #expect(cache.get("a") == 1 && cache.get("c") == 3)
        clock = 11
        #expect(cache.get("a") == nil)
        cache.put("d", 4)
        #expect(cache.count == 1)
        #expect(cache.keys == ["d"])
    }

    @Test("multipart bodies: fields, a file with CRLFs inside, refusals")
    func multipart() throws {
        let file: [UInt8] = [0x89, 0x50, 0x0D, 0x0A, 0x2D, 0x2D, 0x00, 0xFF]
        let body = Data("--XyZ\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nwhat is it?\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n".utf8)
            + Data(file) + Data("\r\n--XyZ--\r\n".utf8)
        let fields = try RequestFields(body: body, contentType: "multipart/form-data; boundary=XyZ")
        #expect(try fields.string("question") == "what is it?")
        #expect(fields.image == Data(file))
        #expect(throws: APIError.self) { try RequestFields(body: Data("--XyZ\r\nno header end".utf8), contentType: "multipart/form-data; boundary=XyZ") }
        #expect(throws: APIError.self) { try RequestFields(body: body, contentType: "multipart/form-data") }
        #expect(throws: APIError.self) { try RequestFields(body: body, contentType: "text/plain") }
        // A body built to make a naive boundary search quadratic is refused (how fast is measured by
        // Benchmarks/hostile_multipart.py, not here: a loaded machine would make any limit a guess).
        let hostile = Data([UInt8](repeating: UInt8(ascii: "-"), count: 4 << 20))
        #expect(throws: APIError.self) {
            try RequestFields(body: hostile, contentType: "multipart/form-data; boundary=" + String(repeating: "-", count: 67) + "x")
        }
    }

    @Test("OpenAI messages map onto BLIP-2's question-answer turns")
    func messages() throws {
        let url = "data:image/png;base64," + Data([1, 2, 3]).base64EncodedString()
        let request: [String: Any] = ["messages": [
            ["role": "system", "content": "You are helpful."],
            ["role": "user", "content": [["type": "text", "text": "what is it?"], ["type": "image_url", "image_url": ["url": url]]]],
            ["role": "assistant", "content": "a cross"],
            ["role": "user", "content": "what color?"],
        ], "max_tokens": 5, "temperature": 0]
        let parsed = try ChatCompletionRequest(body: JSONSerialization.data(withJSONObject: request))
        #expect(parsed.image == Data([1, 2, 3]))
        #expect(parsed.history.map(\.question) == ["what is it?"])
        #expect(parsed.history.map(\.answer) == ["a cross"])
        #expect(parsed.question == "what color?")
        #expect(parsed.maxTokens == 5)

        let caption = try ChatCompletionRequest(body: JSONSerialization.data(withJSONObject: ["messages": [
            ["role": "user", "content": [["type": "image_url", "image_url": ["url": url]]]]]]))
        #expect(caption.question == nil && caption.history.isEmpty)

        let twoImages = ["messages": [["role": "user", "content": [["type": "image_url", "image_url": ["url": url]],
                                                                    ["type": "image_url", "image_url": ["url": url + "AA"]]]]]]
        #expect(throws: APIError.self) { try ChatCompletionRequest(body: JSONSerialization.data(withJSONObject: twoImages)) }
    }
}
