import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Every route and error of `blip2 serve`, through URLSession (and a raw socket where a client would
/// normalise or finish what the test needs broken) against the running executable on loopback.
@Suite("blip2 serve over HTTP", .serialized)
struct ServerAPITests {
    let image = try! Data(contentsOf: exampleImage)

    func withServer(_ extra: [String] = [], _ body: (ServerProcess) async throws -> Void) async throws {
        let server = try ServerProcess(extra)
        try await body(server)
        #expect(server.stop() == 0, "blip2 serve must exit 0 on SIGTERM")
    }

    func upload(_ fields: [String: String] = [:]) -> (Data, [String: String]) {
        var form = Multipart()
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) { form.field(k, v) }
        form.file("image", image)
        return form.finished()
    }

    @Test("page, health, models and metrics")
    func staticRoutes() async throws {
        try await withServer { server in
            let page = try await http("GET", server.base + "/")
            #expect(page.status == 200)
            #expect(page.header("Content-Type")?.hasPrefix("text/html") == true)
            #expect(page.text.contains("<title>blip2 kiosk</title>"))
            // Self-contained: nothing is loaded from another host.
            #expect(!page.text.contains("src=\"http") && !page.text.contains("href=\"http") && !page.text.contains("@import"))

            let health = try await http("GET", server.base + "/health")
            #expect(health.status == 200)
            #expect(health.json["status"] as? String == "ok")
            #expect(health.json["model"] as? String == "demo-q8")
            #expect(health.json["precision"] as? String == "q8")
            // The demo model's KV cache is small: the count limit applies, not the memory one.
            #expect(health.json["session_capacity"] as? Int == 16)

            let models = try await http("GET", server.base + "/v1/models")
            let data = try #require(models.json["data"] as? [[String: Any]])
            #expect(data.map { $0["id"] as? String } == ["demo-q8"])
            #expect(models.json["object"] as? String == "list")

            let metrics = try await http("GET", server.base + "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
            #expect(metrics.text.contains(#"blip2_http_requests_total{route="/health",status="200"} 1"#))
            #expect(metrics.text.contains("# TYPE blip2_stage_duration_seconds histogram"))
            #expect(metrics.text.contains("blip2_queue_depth 0"))
        }
    }

    @Test("no path reaches the file system")
    func pathTraversal() async throws {
        try await withServer { server in
            for path in ["/../Package.swift", "/%2e%2e/%2e%2e/etc/passwd", "/index.html/../../../etc/passwd", "//etc/passwd",
                         "/..%2f..%2fetc%2fpasswd", "/Models/demo-q8.blip2", "/Sources/Blip2Server/Page.swift"] {
                let connection = try RawConnection(port: server.port)
                connection.send(rawRequest("GET", path, port: server.port))
                let answer = connection.read(until: "}}")
                connection.close()
                #expect(answer.hasPrefix("HTTP/1.1 404"), "\(path): \(answer.prefix(80))")
                #expect(!answer.contains("root:") && !answer.contains("PackageDescription") && !answer.contains("BLIP2"))
            }
        }
    }

    @Test("caption from multipart, base64 and a data: URL, equal to blip2 caption; streamed pieces add up to it")
    func caption() async throws {
        let expected = try cli(["caption", demoModel, exampleImage.path])[0]
        try await withServer { server in
            let (body, headers) = upload()
            let multipart = try await http("POST", server.base + "/v1/caption", body: body, headers: headers)
            #expect(multipart.status == 200)
            #expect(multipart.json["text"] as? String == expected)
            #expect(multipart.json["task"] as? String == "caption")
            #expect(multipart.json["image_cached"] as? Bool == false)
            #expect((multipart.json["token_ids"] as? [Int])?.isEmpty == false)
            #expect(multipart.json["prompt_ids"] as? [Int] == [2])
            let timings = try #require(multipart.json["timings_ms"] as? [String: Double])
            #expect(Set(timings.keys).isSuperset(of: ["image_decode", "preprocess", "vision", "qformer_projection", "prefill", "generate", "total"]))

            let base64 = image.base64EncodedString()
            for value in [base64, "data:image/png;base64," + base64] {
                let json = try await http("POST", server.base + "/v1/caption", body: jsonBody(["image": value]),
                                          headers: ["Content-Type": "application/json"])
                #expect(json.status == 200)
                #expect(json.json["text"] as? String == expected)
                // The same bytes again: the encoding is reused.
                #expect(json.json["image_cached"] as? Bool == true)
            }

            let (streamBody, streamHeaders) = upload(["stream": "true"])
            let streamed = try await http("POST", server.base + "/v1/caption", body: streamBody, headers: streamHeaders)
            #expect(streamed.status == 200)
            #expect(streamed.header("Content-Type") == "text/event-stream")
            let frames = events(streamed.text)
            let pieces = frames.filter { $0.0 == "message" }.compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.1.utf8)) as? [String: Any])?["text"] as? String
            }
            #expect(pieces.count > 1)
            #expect(pieces.joined() == expected)
            let result = try #require(frames.last)
            #expect(result.0 == "result")
            #expect(result.1.contains(expected))

            let prompted = try await http("POST", server.base + "/v1/caption", body: jsonBody(["image": base64, "prompt": "a small"]),
                                          headers: ["Content-Type": "application/json"])
            let expectedPrompted = try cli(["caption", demoModel, exampleImage.path, "--prompt", "a small"])[0]
            #expect(prompted.json["text"] as? String == expectedPrompted)
            #expect(prompted.json["task"] as? String == "prompted_caption")
        }
    }

    @Test("ask equals blip2 ask; generation options are the CLI's")
    func ask() async throws {
        let question = "where is the red circle?"
        let expected = try cli(["ask", demoModel, exampleImage.path, question])[0]
        let sampled = try cli(["ask", demoModel, exampleImage.path, question, "--sample", "--temperature", "1.5", "--seed", "7"])[0]
        try await withServer { server in
            let (body, headers) = upload(["question": question])
            let answer = try await http("POST", server.base + "/v1/ask", body: body, headers: headers)
            #expect(answer.status == 200)
            #expect(answer.json["text"] as? String == expected)
            #expect(answer.json["question"] as? String == question)
            #expect(answer.json["prompt"] as? String == "Question: \(question) Answer:")
            let (body2, headers2) = upload(["question": question, "sample": "true", "temperature": "1.5", "seed": "7"])
            let sample = try await http("POST", server.base + "/v1/ask", body: body2, headers: headers2)
            #expect(sample.json["text"] as? String == sampled)
        }
    }

    @Test("chat keeps a session: two turns equal blip2 chat, the second reuses the KV cache")
    func chat() async throws {
        let questions = ["what color is the cross?", "what shape is on the left?"]
        let expected = try cli(["chat", demoModel, exampleImage.path], stdin: questions.joined(separator: "\n") + "\n")
        try await withServer { server in
            let (body, headers) = upload(["question": questions[0]])
            let first = try await http("POST", server.base + "/v1/chat", body: body, headers: headers)
            #expect(first.status == 200)
            #expect(first.json["text"] as? String == expected[0])
            let session = try #require(first.json["session_id"] as? String)
            let second = try await http("POST", server.base + "/v1/chat", body: jsonBody(["session_id": session, "question": questions[1], "stream": true]),
                                        headers: ["Content-Type": "application/json"])
            #expect(second.status == 200)
            let result = try #require(events(second.text).last)
            #expect(result.0 == "result")
            let record = try #require(try JSONSerialization.jsonObject(with: Data(result.1.utf8)) as? [String: Any])
            #expect(record["text"] as? String == expected[1])
            #expect((record["reused_prompt_ids"] as? Int ?? 0) > 0)
            #expect(record["dropped_turns"] as? Int == 0)

            let unknown = try await http("POST", server.base + "/v1/chat", body: jsonBody(["session_id": "nope", "question": "why?"]),
                                         headers: ["Content-Type": "application/json"])
            #expect(unknown.status == 404)
            #expect(unknown.error["code"] as? String == "session_not_found")
        }
    }

    @Test("a session expires after --session-ttl")
    func sessionExpiry() async throws {
        try await withServer(["--session-ttl", "1"]) { server in
            let (body, headers) = upload(["question": "what color is the cross?"])
            let first = try await http("POST", server.base + "/v1/chat", body: body, headers: headers)
            let session = try #require(first.json["session_id"] as? String)
            try await Task.sleep(nanoseconds: 1_600_000_000)
            let later = try await http("POST", server.base + "/v1/chat", body: jsonBody(["session_id": session, "question": "and?"]),
                                       headers: ["Content-Type": "application/json"])
            #expect(later.status == 404)
            #expect(later.error["code"] as? String == "session_not_found")
        }
    }

    @Test("bad input is a 400 with a JSON error naming the problem")
    func badInput() async throws {
        try await withServer { server in
            func post(_ path: String, _ object: [String: Any]) async throws -> HTTPResult {
                try await http("POST", server.base + path, body: jsonBody(object), headers: ["Content-Type": "application/json"])
            }
            let notImage = try await post("/v1/caption", ["image": Data("just some text, not a picture".utf8).base64EncodedString()])
            #expect(notImage.status == 400)
            #expect(notImage.error["code"] as? String == "not_an_image")
            #expect(notImage.error["param"] as? String == "image")

            let bomb = try await post("/v1/caption", ["image": pngHeader(width: 60_000, height: 60_000).base64EncodedString()])
            #expect(bomb.status == 400)
            #expect(bomb.error["code"] as? String == "image_too_large")
            #expect((bomb.error["message"] as? String)?.contains("60000") == true)

            let long = String(repeating: "what is the colour of the thing ", count: 100)
            let overContext = try await post("/v1/ask", ["image": image.base64EncodedString(), "question": long])
            #expect(overContext.status == 400)
            #expect(overContext.error["code"] as? String == "context_length_exceeded")

            let noImage = try await post("/v1/caption", ["prompt": "a"])
            #expect(noImage.status == 400)
            #expect(noImage.error["param"] as? String == "image")

            let badOption = try await post("/v1/caption", ["image": image.base64EncodedString(), "beams": 0])
            #expect(badOption.status == 400)
            #expect(badOption.error["code"] as? String == "invalid_generation_option")

            let manyBeams = try await post("/v1/caption", ["image": image.base64EncodedString(), "beams": 64])
            #expect(manyBeams.status == 400)
            #expect(manyBeams.error["param"] as? String == "beams")

            let wrongType = try await post("/v1/caption", ["image": image.base64EncodedString(), "max_new_tokens": "many"])
            #expect(wrongType.status == 400)
            #expect(wrongType.error["param"] as? String == "max_new_tokens")

            let invalidJSON = try await http("POST", server.base + "/v1/caption", body: Data("{".utf8), headers: ["Content-Type": "application/json"])
            #expect(invalidJSON.status == 400)

            let remote = try await post("/v1/chat/completions", ["messages": [["role": "user", "content": [
                ["type": "image_url", "image_url": ["url": "http://192.0.2.1/cat.jpg"]]]]]])
            #expect(remote.status == 400)
            #expect(remote.error["code"] as? String == "remote_image_refused")

            let noMessages = try await post("/v1/chat/completions", ["model": "demo-q8"])
            #expect(noMessages.status == 400)
            #expect(noMessages.error["param"] as? String == "messages")

            let wrongModel = try await post("/v1/chat/completions", ["model": "gpt-4o", "messages": [["role": "user", "content": [
                ["type": "image_url", "image_url": ["url": "data:image/png;base64," + image.base64EncodedString()]]]]]])
            #expect(wrongModel.status == 404)
            #expect(wrongModel.error["code"] as? String == "model_not_found")

            let both = try await post("/v1/chat", ["image": image.base64EncodedString(), "session_id": "x", "question": "q"])
            #expect(both.status == 400)

            let wrongMethod = try await http("GET", server.base + "/v1/caption")
            #expect(wrongMethod.status == 404 || wrongMethod.status == 405)
            #expect(wrongMethod.error["message"] != nil)

            // The server is still serving after all of that.
            let health = try await http("GET", server.base + "/health")
            #expect(health.status == 200)
        }
    }

    @Test("chat completions without and with streaming")
    func completions() async throws {
        let expected = try cli(["caption", demoModel, exampleImage.path])[0]
        try await withServer { server in
            let message: [String: Any] = ["role": "user", "content": [["type": "image_url", "image_url": ["url": "data:image/png;base64," + image.base64EncodedString()]]]]
            let plain = try await http("POST", server.base + "/v1/chat/completions", body: jsonBody(["model": "demo-q8", "messages": [message]]),
                                       headers: ["Content-Type": "application/json"])
            #expect(plain.status == 200)
            let choice = try #require((plain.json["choices"] as? [[String: Any]])?.first)
            #expect((choice["message"] as? [String: Any])?["content"] as? String == expected)
            #expect(choice["finish_reason"] as? String == "stop")
            let usage = try #require(plain.json["usage"] as? [String: Int])
            #expect(usage["total_tokens"] == usage["prompt_tokens"]! + usage["completion_tokens"]!)

            let streamed = try await http("POST", server.base + "/v1/chat/completions",
                                          body: jsonBody(["messages": [message], "stream": true, "stream_options": ["include_usage": true]]),
                                          headers: ["Content-Type": "application/json"])
            let frames = events(streamed.text).map(\.1)
            #expect(frames.last == "[DONE]")
            let chunks = frames.dropLast().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            let text = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }.joined()
            #expect(text == expected)
            #expect(chunks.last?["usage"] != nil)
        }
    }

    @Test("an API key is required on /v1 and /metrics when set")
    func apiKey() async throws {
        try await withServer(["--api-key", "kiosk-secret"]) { server in
            let missing = try await http("GET", server.base + "/v1/models")
            #expect(missing.status == 401)
            #expect(missing.error["code"] as? String == "invalid_api_key")
            #expect(try await http("GET", server.base + "/v1/models", headers: ["Authorization": "Bearer kiosk-secre"]).status == 401)
            #expect(try await http("GET", server.base + "/metrics").status == 401)
            #expect(try await http("GET", server.base + "/v1/models", headers: ["Authorization": "Bearer kiosk-secret"]).status == 200)
            #expect(try await http("GET", server.base + "/v1/models", headers: ["X-API-Key": "kiosk-secret"]).status == 200)
            #expect(try await http("GET", server.base + "/health").status == 200)
            #expect(try await http("GET", server.base + "/").status == 200)
        }
    }

    @Test("a body over --max-body-mb is a 413")
    func bodyLimit() async throws {
        try await withServer(["--max-body-mb", "1"]) { server in
            var form = Multipart()
            form.file("image", Data(repeating: 0x41, count: 1_500_000))
            let (body, headers) = form.finished()
            let answer = try await http("POST", server.base + "/v1/caption", body: body, headers: headers)
            #expect(answer.status == 413)
            #expect(answer.error["code"] as? String == "body_too_large")
            #expect(try await http("GET", server.base + "/health").status == 200)
        }
    }

    /// A request that keeps the model busy: EOS is held back for 430 tokens.
    func longRequest(stream: Bool = false) -> Data {
        jsonBody(["image": image.base64EncodedString(), "min_new_tokens": 430, "max_new_tokens": 430, "stream": stream])
    }

    @Test("past the queue: 503 with Retry-After")
    func busy() async throws {
        try await withServer(["--parallel", "1", "--queue", "0"]) { server in
            let long = Task { try await http("POST", server.base + "/v1/caption", body: longRequest(), headers: ["Content-Type": "application/json"]) }
            // The model has taken the long job (its 430 tokens take seconds even on a fast machine).
            #expect(try await eventually { try await jobsStarted(server) == 1 })
            var refused: HTTPResult?
            for _ in 0..<40 where refused == nil {
                let (body, headers) = upload()
                let answer = try await http("POST", server.base + "/v1/caption", body: body, headers: headers)
                if answer.status == 503 { refused = answer } else { #expect(answer.status == 200) }
            }
            let busy = try #require(refused)
            #expect(Int(busy.header("Retry-After") ?? "") ?? 0 >= 1)
            #expect(busy.error["code"] as? String == "queue_full")
            let finished = try await long.value
            #expect(finished.status == 200)
            #expect((finished.json["token_ids"] as? [Int])?.count == 430)
        }
    }

    @Test("--parallel 2: two generations run at once, a third waits in the queue or is refused past it")
    func slots() async throws {
        try await withServer(["--parallel", "2", "--queue", "0"]) { server in
            let first = Task { try await http("POST", server.base + "/v1/caption", body: longRequest(), headers: ["Content-Type": "application/json"]) }
            let second = Task { try await http("POST", server.base + "/v1/caption", body: longRequest(), headers: ["Content-Type": "application/json"]) }
            #expect(try await eventually { try await jobsStarted(server) == 2 })
            let health = try await http("GET", server.base + "/health").json
            #expect(health["active_slots"] as? Int == 2 && health["slots"] as? Int == 2)
            #expect(metric(try await http("GET", server.base + "/metrics").text, "blip2_active_slots") == 2)
            let (body, headers) = upload()
            let third = try await http("POST", server.base + "/v1/caption", body: body, headers: headers)
            #expect(third.status == 503 && third.error["code"] as? String == "queue_full")
            for task in [first, second] {
                let finished = try await task.value
                #expect(finished.status == 200 && (finished.json["token_ids"] as? [Int])?.count == 430)
            }
            // Their steps were shared: the histogram saw steps of two sequences.
            let text = try await http("GET", server.base + "/metrics").text
            let one = metric(text, #"blip2_decode_step_sequences_bucket{le="1.0"}"#) ?? 0
            let two = metric(text, #"blip2_decode_step_sequences_bucket{le="2.0"}"#) ?? 0
            #expect(two - one > 100, "steps of two sequences: \(two - one)")
        }
    }

    @Test("a client that hangs up cancels its generation between tokens")
    func disconnectCancels() async throws {
        try await withServer { server in
            func cancelled() async throws -> Double {
                metric(try await http("GET", server.base + "/metrics").text, "blip2_generations_cancelled_total") ?? 0
            }
            // Streaming: hang up after the first piece.
            let streaming = try RawConnection(port: server.port)
            streaming.send(rawRequest("POST", "/v1/caption", port: server.port, body: longRequest(stream: true)))
            #expect(streaming.read(until: "data: ").contains("200 OK"))
            streaming.close()
            #expect(try await eventually { try await cancelled() == 1 })

            // Waiting for a whole answer: hang up while it is generated.
            let waiting = try RawConnection(port: server.port)
            waiting.send(rawRequest("POST", "/v1/caption", port: server.port, body: longRequest()))
            #expect(try await eventually { try await jobsStarted(server) == 2 })
            waiting.close()
            #expect(try await eventually { try await cancelled() == 2 })
            // Neither ran to its 430 tokens.
            let tokens = metric(try await http("GET", server.base + "/metrics").text, "blip2_generated_tokens_total") ?? 0
            #expect(tokens == 0)
        }
    }

    @Test("SIGTERM lets the running generation finish, then exits 0; SIGINT too")
    func gracefulShutdown() async throws {
        let server = try ServerProcess()
        let long = Task { try await http("POST", server.base + "/v1/caption", body: longRequest(), headers: ["Content-Type": "application/json"]) }
        // SIGTERM once the model is running the request, not before it has arrived.
        #expect(try await eventually { try await jobsStarted(server) == 1 })
        kill(server.process.processIdentifier, SIGTERM)
        let finished = try await long.value
        #expect(finished.status == 200)
        #expect((finished.json["token_ids"] as? [Int])?.count == 430)
        #expect(server.stop() == 0)

        let idle = try ServerProcess()
        #expect(idle.stop(signal: SIGINT) == 0)
    }
}
