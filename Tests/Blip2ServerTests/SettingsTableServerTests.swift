import Blip2Generation
import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The server reads its generation fields from the same table as the command line: every row under its
/// field name with the row's defaults; a field no route takes is refused by name; a route asked with the
/// wrong method answers 405 with `Allow`.
@Suite("blip2 serve reads the settings table", .serialized)
struct SettingsTableServerTests {
    let image = try! Data(contentsOf: exampleImage)

    func post(_ server: ServerProcess, _ path: String, _ object: [String: Any]) async throws -> HTTPResult {
        try await http("POST", server.base + path, body: jsonBody(object), headers: ["Content-Type": "application/json"])
    }

    @Test("every row is read under its field, and its default is the server's default")
    func everyRowIsAField() async throws {
        let server = try ServerProcess()
        defer { #expect(server.stop() == 0) }
        let base: [String: Any] = ["image": image.base64EncodedString()]
        for row in GenerationSetting.all {
            // An array is no setting's value: the refusal must name the row's field.
            var bad = base
            bad[row.field] = [1, 2]
            let refused = try await post(server, "/v1/caption", bad)
            #expect(refused.status == 400, "\(row.field)")
            #expect(refused.error["param"] as? String == row.field, "\(row.field): \(refused.text)")
            #expect((refused.error["message"] as? String)?.hasPrefix("\(row.field): expected ") == true, "\(refused.text)")
        }
        // Every field at the table's default, as multipart text parts (how curl -F sends them), answers as
        // a request without them: the table's defaults are the server's.
        let plain = try await post(server, "/v1/caption", base)
        var form = Multipart()
        for row in GenerationSetting.all where row.setting != .maxNewTokens { form.field(row.field, row.defaultValue) }
        form.file("image", image)
        let (body, headers) = form.finished()
        let explicit = try await http("POST", server.base + "/v1/caption", body: body, headers: headers)
        #expect(plain.status == 200 && explicit.status == 200, "\(explicit.text)")
        #expect(plain.json["token_ids"] as? [Int] == explicit.json["token_ids"] as? [Int])
        #expect((plain.json["token_ids"] as? [Int])?.isEmpty == false)
    }

    @Test("a field the route does not take is refused by name")
    func unknownFieldsAreRefused() async throws {
        let server = try ServerProcess()
        defer { #expect(server.stop() == 0) }
        let base: [String: Any] = ["image": image.base64EncodedString()]
        var misspelt = base
        misspelt["beam"] = 3
        let one = try await post(server, "/v1/caption", misspelt)
        #expect(one.status == 400)
        #expect(one.error["param"] as? String == "beam")
        #expect(one.error["code"] as? String == "unknown_field")
        #expect((one.error["message"] as? String)?.hasPrefix("beam: not a field of /v1/caption (did you mean beams?)") == true, "\(one.text)")

        var two = base
        two["max_tokens"] = 5
        two["question"] = "what is it?"
        let both = try await post(server, "/v1/caption", two)
        #expect(both.status == 400)
        #expect((both.error["message"] as? String)?.hasPrefix("max_tokens, question: not fields of /v1/caption") == true, "\(both.text)")

        // session_id belongs to chat only; multipart text parts are checked as JSON fields are.
        var form = Multipart()
        form.field("session_id", "abc")
        form.field("question", "what is it?")
        form.file("image", image)
        let (body, headers) = form.finished()
        let ask = try await http("POST", server.base + "/v1/ask", body: body, headers: headers)
        #expect(ask.status == 400)
        #expect(ask.error["param"] as? String == "session_id", "\(ask.text)")
    }

    @Test("the wrong method is a 405 naming the methods in Allow")
    func wrongMethodIs405() async throws {
        let server = try ServerProcess()
        defer { #expect(server.stop() == 0) }
        let get = try await http("GET", server.base + "/v1/caption")
        #expect(get.status == 405)
        #expect(get.header("Allow") == "POST")
        #expect(get.error["code"] as? String == "method_not_allowed")
        let post = try await http("POST", server.base + "/health", body: Data("{}".utf8), headers: ["Content-Type": "application/json"])
        #expect(post.status == 405)
        #expect(post.header("Allow") == "GET")
        // Still counted under the route's own label.
        let metrics = try await http("GET", server.base + "/metrics")
        #expect(metrics.text.contains(#"route="/v1/caption",status="405""#), "\(metrics.text)")
    }
}
