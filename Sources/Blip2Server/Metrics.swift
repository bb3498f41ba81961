import Blip2Pipeline
import Foundation
import Prometheus

// MARK: - /metrics in Prometheus text format
//
// A registry of our own (not the process-wide MetricsSystem), so that tests and several servers in one
// process do not share counters.

final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let queueDepth: Gauge
    private let activeSlots: Gauge
    private let stepSequences: ValueHistogram
    private let sessions: Gauge
    private let tokens: Counter
    private let cacheHits: Counter
    private let cacheMisses: Counter
    private let cancelled: Counter
    private let stageHistograms: [String: ValueHistogram]

    /// Seconds, from a demo model's milliseconds to a full-size model's tens of seconds.
    static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120]
    static let stages = ["queue_wait", "image_decode", "preprocess", "vision", "qformer_projection", "prefill", "generate", "total"]

    init() {
        queueDepth = registry.makeGauge(descriptor: .init(metricName: "blip2_queue_depth", unitName: "",
                                                          helpText: "Generation requests waiting for the model"))
        activeSlots = registry.makeGauge(descriptor: .init(metricName: "blip2_active_slots", unitName: "",
                                                           helpText: "Generation requests running now (each in a slot; see serve --parallel)"))
        stepSequences = registry.makeValueHistogram(
            descriptor: .init(metricName: "blip2_decode_step_sequences", unitName: "",
                              helpText: "Sequences advanced by each decode step of the model (requests and beams sharing it)"),
            buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96])
        sessions = registry.makeGauge(descriptor: .init(metricName: "blip2_chat_sessions", unitName: "",
                                                        helpText: "Chat sessions held in memory"))
        tokens = registry.makeCounter(descriptor: .init(metricName: "blip2_generated_tokens", unitName: "total",
                                                        helpText: "Tokens generated"))
        cacheHits = registry.makeCounter(descriptor: .init(metricName: "blip2_image_cache_hits", unitName: "total",
                                                           helpText: "Uploads whose encoding was reused"))
        cacheMisses = registry.makeCounter(descriptor: .init(metricName: "blip2_image_cache_misses", unitName: "total",
                                                             helpText: "Uploads encoded by the vision tower"))
        cancelled = registry.makeCounter(descriptor: .init(metricName: "blip2_generations_cancelled", unitName: "total",
                                                           helpText: "Generations stopped between tokens because their client went away"))
        var histograms: [String: ValueHistogram] = [:]
        for stage in Self.stages {
            histograms[stage] = registry.makeValueHistogram(
                descriptor: .init(metricName: "blip2_stage_duration", unitName: "seconds", helpText: "Latency per pipeline stage"),
                labels: [("stage", stage)], buckets: Self.buckets)
        }
        stageHistograms = histograms
    }

    func request(route: String, status: Int) {
        registry.makeCounter(descriptor: .init(metricName: "blip2_http_requests", unitName: "total", helpText: "HTTP requests by route and status"),
                             labels: [("route", route), ("status", String(status))]).increment()
    }

    func setQueueDepth(_ depth: Int) { queueDepth.set(Double(depth)) }
    func setActiveSlots(_ count: Int) { activeSlots.set(Double(count)) }
    func recordStep(sequences: Int) { stepSequences.record(Double(sequences)) }
    func setSessions(_ count: Int) { sessions.set(Double(count)) }
    func imageCache(hit: Bool) { (hit ? cacheHits : cacheMisses).increment() }

    func record(timings: StageTimings, generatedTokens: Int) {
        tokens.increment(by: Int64(generatedTokens))
        let values: [(String, Double?)] = [
            ("image_decode", timings.imageDecode), ("preprocess", timings.preprocess), ("vision", timings.vision),
            ("qformer_projection", timings.qformer), ("prefill", timings.prefill), ("generate", timings.generate), ("total", timings.total),
        ]
        for (stage, milliseconds) in values {
            if let milliseconds { stageHistograms[stage]?.record(milliseconds / 1000) }
        }
    }

    func generationCancelled() { cancelled.increment() }

    func recordQueueWait(seconds: Double) { stageHistograms["queue_wait"]?.record(seconds) }

    func text() -> String { registry.emitToString() }
}
