import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import PostgresNIO

/// What one run counts: latencies of answered exchanges, failures by kind, events each way.
actor Recorder {
    private(set) var latencies: [Double] = []
    private(set) var failures: [String: Int] = [:]
    private(set) var sent = 0
    private(set) var received = 0

    func record(_ outcome: SimulatedVessel.Outcome) {
        switch outcome {
        case .ok(let seconds, let up, let down, _):
            latencies.append(seconds)
            sent += up
            received += down
        case .failed(let kind, _):
            failures[kind, default: 0] += 1
        }
    }
}

/// Peaks seen while the run goes: the server's resident memory and the shore database's
/// connections (every backend of the database except the load generator's own two).
actor Peaks {
    private(set) var connections: Int64 = 0
    private(set) var serverConnections: Int64 = 0
    private(set) var rss: Double = 0

    func see(connections: Int64, server: Int64, rss: Double) {
        self.connections = max(self.connections, connections)
        serverConnections = max(serverConnections, server)
        self.rss = max(self.rss, rss)
    }
}

/// One point of the curve: `n` vessels exchanging every `interval` seconds (±20 %, first one at
/// a random moment of the first interval) for `seconds`, while the shore writes to their
/// partitions. A vessel answered with more to fetch (catch-up, `more`) exchanges again at once;
/// one answered `busy` retries after 1–2 s.
struct LoadRun {
    var binary: String
    var vessels: Int
    var seconds: Int
    var interval: Double
    var writes: Int
    var crew: Int
    var bounds: ShoreUnderLoad.Bounds

    struct Result {
        var vessels: Int
        var exchanges: Int
        var perSecond: Double
        var p50: Double, p99: Double, maximum: Double
        var failures: [String: Int]
        var sent: Int, received: Int, shoreWrites: Int
        var peakMB: Double, afterMB: Double
        var connections: Int64, serverConnections: Int64, pool: Int
        var serverCPU: Double
    }

    func run() async throws -> Result {
        let ids = (1...vessels).map { String(format: "v%05d", $0) }
        let shore = try await ShoreUnderLoad.start(binary: binary, vessels: ids, crew: crew, bounds: bounds)
        defer { shore.stop() }
        let simulated = try ids.map { try shore.vessel($0, writesPerExchange: writes) }
        let recorder = Recorder()
        let peaks = Peaks()
        let cpuBefore = Self.cpuSeconds(shore.serverPID)
        let start = ContinuousClock.now
        let end = start + .seconds(seconds)
        let writer = try await ShoreWriter.start(url: shore.url, vessels: ids.count, perVesselPerSecond: Double(writes) / interval, until: end)
        let sampler = Task {
            let db = try await DatabaseSession.connect(url: shore.url, logger: Fixtures.logger)
            defer { Task { await db.close() } }
            var binds = PostgresBindings()
            binds.append(shore.database)
            binds.append(writer.backend)
            while ContinuousClock.now < end + .seconds(5) && !Task.isCancelled {
                let row = try await db.rows("""
                    SELECT count(*), count(*) FILTER (WHERE application_name = 'fleetsync serve') FROM pg_stat_activity
                    WHERE datname = $1 AND pid NOT IN (pg_backend_pid(), $2)
                    """, binds, context: "counting connections")[0]
                let (all, server) = try row.decode((Int64, Int64).self)
                await peaks.see(connections: all, server: server, rss: shore.serverMemory("VmRSS"))
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        let interval = self.interval
        await withTaskGroup(of: Void.self) { group in
            for vessel in simulated {
                group.addTask {
                    try? await Task.sleep(for: .seconds(Double.random(in: 0..<interval)))
                    while ContinuousClock.now < end {
                        let outcome = await vessel.exchange()
                        await recorder.record(outcome)
                        switch outcome {
                        case .ok(_, _, _, let more) where more: continue
                        case .ok: try? await Task.sleep(for: .seconds(interval * Double.random(in: 0.8...1.2)))
                        case .failed: try? await Task.sleep(for: .seconds(Double.random(in: 1...2)))
                        }
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - start
        let shoreWrites = await writer.stop()
        sampler.cancel()
        _ = await sampler.result
        for vessel in simulated { await vessel.client.shutdown() }
        try await Task.sleep(for: .seconds(2))
        let sorted = await recorder.latencies.sorted()
        func quantile(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Result(vessels: vessels, exchanges: sorted.count, perSecond: Double(sorted.count) / wall,
                      p50: quantile(0.5), p99: quantile(0.99), maximum: sorted.last ?? 0, failures: await recorder.failures,
                      sent: await recorder.sent, received: await recorder.received, shoreWrites: shoreWrites,
                      peakMB: shore.serverMemory("VmHWM"), afterMB: shore.serverMemory("VmRSS"),
                      connections: await peaks.connections, serverConnections: await peaks.serverConnections, pool: bounds.databaseConnections,
                      serverCPU: Self.cpuSeconds(shore.serverPID) - cpuBefore)
    }

    /// User plus system CPU seconds of a process, from /proc/PID/stat.
    static func cpuSeconds(_ pid: pid_t) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Writes to the vessels' partitions on the shore while the run goes, through a connection of
/// its own: every 200 ms, updates of `notes` of random crew rows and new crew members (one in
/// four writes), `perVesselPerSecond` per vessel on average.
final class ShoreWriter: @unchecked Sendable {
    let backend: Int32
    private let task: Task<Int, Error>

    private init(backend: Int32, task: Task<Int, Error>) {
        self.backend = backend
        self.task = task
    }

    static func start(url: String, vessels: Int, perVesselPerSecond: Double, until end: ContinuousClock.Instant) async throws -> ShoreWriter {
        let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
        let backend: Int32 = try await db.rows("SELECT pg_backend_pid()")[0].decode(Int32.self)
        var seeded: [UUID] = []
        for row in try await db.rows("SELECT id FROM seafarer") { seeded.append(try row.decode(UUID.self)) }
        let initial = seeded
        let perTick = max(1, Int((Double(vessels) * perVesselPerSecond * 0.2).rounded()))
        let codes = (1...vessels).map { String(format: "v%05d", $0) }
        let task = Task { () throws -> Int in
            defer { Task { await db.close() } }
            var crew = initial
            var written = 0
            var tick = 0
            while ContinuousClock.now < end {
                tick += 1
                let inserts = perTick / 4
                var update = PostgresBindings()
                update.append((0..<(perTick - inserts)).map { _ in crew[Int.random(in: 0..<crew.count)] })
                update.append("shore note \(tick)")
                try await db.execute("UPDATE seafarer SET notes = $2 WHERE id = ANY($1::uuid[])", update, context: "shore updates")
                if inserts > 0 {
                    var insert = PostgresBindings()
                    insert.append((0..<inserts).map { _ in codes[Int.random(in: 0..<codes.count)] })
                    insert.append("joined at tick \(tick)")
                    for row in try await db.rows("INSERT INTO seafarer (vessel_code, full_name) SELECT v, $2 FROM unnest($1::text[]) v RETURNING id", insert, context: "shore inserts") {
                        crew.append(try row.decode(UUID.self))
                    }
                }
                written += perTick
                try await Task.sleep(for: .milliseconds(200))
            }
            return written
        }
        return ShoreWriter(backend: backend, task: task)
    }

    /// Waits for the writer to finish; the number of rows it wrote.
    func stop() async -> Int { (try? await task.value) ?? -1 }
}
