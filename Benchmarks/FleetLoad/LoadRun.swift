import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import PostgresNIO

/// What one run counts: latencies of answered exchanges, failures by kind, events each way.
actor Recorder {
    private(set) var latencies: [Double] = []
    /// Latencies and failures of what ended after the start (every vessel's first contact and
    /// catch-up: the first two intervals), reported apart as the steady state.
    private(set) var steadyLatencies: [Double] = []
    private(set) var steadyFailures = 0
    let steadyFrom: ContinuousClock.Instant

    init(steadyFrom: ContinuousClock.Instant) { self.steadyFrom = steadyFrom }

    private(set) var failures: [String: Int] = [:]
    private(set) var sent = 0
    private(set) var received = 0
    /// Long polls answered (with events, and empty when their time was up), and abandoned.
    private(set) var pollsWithEvents = 0
    private(set) var pollsEmpty = 0
    private(set) var abandoned = 0

    func record(_ outcome: SimulatedVessel.Outcome) {
        let steady = ContinuousClock.now >= steadyFrom
        switch outcome {
        case .ok(let seconds, let up, let down, _):
            latencies.append(seconds)
            if steady { steadyLatencies.append(seconds) }
            sent += up
            received += down
        case .polled(_, let down, _):
            received += down
            if down > 0 { pollsWithEvents += 1 } else { pollsEmpty += 1 }
        case .abandoned:
            abandoned += 1
        case .failed(let kind, _):
            failures[kind, default: 0] += 1
            if steady { steadyFailures += 1 }
        }
    }
}

/// Peaks seen while the run goes: the server's resident memory and the shore database's
/// connections (every backend of the database except the load generator's own two).
actor Peaks {
    private(set) var connections: Int64 = 0
    private(set) var serverConnections: Int64 = 0
    private(set) var rss: Double = 0
    /// The shore writer's backend, not counted (the generator's own).
    var writer: Int32 = 0

    func exclude(writer: Int32) { self.writer = writer }

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
///
/// With `longPoll`, vessels behave as the daemon does by default (`[vessel] long_poll`): their
/// writes commit every `interval` (±20 %) and are sent at once; between them an idle vessel
/// holds a long poll open (`interval` seconds at most), answered as soon as the shore has
/// something for it, and abandoned (the request cancelled) when its next write commits.
struct LoadRun {
    var binary: String
    var vessels: Int
    var seconds: Int
    var interval: Double
    var writes: Int
    var crew: Int
    var bounds: ShoreUnderLoad.Bounds
    var longPoll = false
    var statements = false
    /// Seconds over which the vessels make their first contact before the measured window
    /// (``JoinResult``); nil: inside it, at the start of each vessel's first exchange (cold).
    var joinSpread: Double? = nil

    struct Result {
        var vessels: Int
        var exchanges: Int
        var perSecond: Double
        var p50: Double, p99: Double, maximum: Double
        /// After the first two intervals (the start): p99 and failures.
        var steadyP99: Double, steadyFailures: Int
        var failures: [String: Int]
        var sent: Int, received: Int, shoreWrites: Int
        var peakMB: Double, afterMB: Double
        var connections: Int64, serverConnections: Int64, pool: Int
        var serverCPU: Double, databaseCPU: Double, generatorCPU: Double, machineCPU: Double
        var pollsWithEvents: Int, pollsEmpty: Int, abandoned: Int
        var statements: [String]
        var join: JoinResult?
    }

    func run() async throws -> Result {
        let ids = (1...vessels).map { String(format: "v%05d", $0) }
        let shore = try await ShoreUnderLoad.start(binary: binary, vessels: ids, crew: crew, bounds: bounds, statements: statements)
        defer { shore.stop() }
        let simulated = try ids.map { try shore.vessel($0, writesPerExchange: writes) }
        let peaks = Peaks()
        let sampler = Task {
            let db = try await DatabaseSession.connect(url: shore.url, logger: Fixtures.logger)
            defer { Task { await db.close() } }
            while !Task.isCancelled {
                var binds = PostgresBindings()
                binds.append(shore.database)
                binds.append(await peaks.writer)
                let row = try await db.rows("""
                    SELECT count(*), count(*) FILTER (WHERE application_name = 'fleetsync serve') FROM pg_stat_activity
                    WHERE datname = $1 AND pid NOT IN (pg_backend_pid(), $2)
                    """, binds, context: "counting connections")[0]
                let (all, server) = try row.decode((Int64, Int64).self)
                await peaks.see(connections: all, server: server, rss: shore.serverMemory("VmRSS"))
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        let join = joinSpread == nil ? nil : await JoinResult.run(simulated, spread: joinSpread!)
        let recorder = Recorder(steadyFrom: ContinuousClock.now + .seconds(2 * interval))
        if statements { await shore.resetStatements() }
        let cpuBefore = Self.cpuSeconds(shore.serverPID)
        let databaseBefore = shore.databaseCPU()
        let generatorBefore = Self.cpuSeconds(getpid())
        let machineBefore = Self.machineBusySeconds()
        let start = ContinuousClock.now
        let end = start + .seconds(seconds)
        let writer = try await ShoreWriter.start(url: shore.url, vessels: ids.count, perVesselPerSecond: Double(writes) / interval, until: end)
        await peaks.exclude(writer: writer.backend)
        let interval = self.interval
        let longPoll = self.longPoll
        await withTaskGroup(of: Void.self) { group in
            for vessel in simulated {
                group.addTask {
                    try? await Task.sleep(for: .seconds(Double.random(in: 0..<interval)))
                    if longPoll {
                        await Self.longPolling(vessel, interval: interval, until: end, recorder: recorder)
                        return
                    }
                    while ContinuousClock.now < end {
                        let outcome = await vessel.exchange()
                        await recorder.record(outcome)
                        switch outcome {
                        case .ok(_, _, _, let more) where more: continue
                        case .failed: try? await Task.sleep(for: .seconds(Double.random(in: 1...2)))
                        default: try? await Task.sleep(for: .seconds(interval * Double.random(in: 0.8...1.2)))
                        }
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - start
        let databaseCPU = shore.databaseCPU() - databaseBefore
        let generatorCPU = Self.cpuSeconds(getpid()) - generatorBefore
        let machineCPU = Self.machineBusySeconds() - machineBefore
        let serverCPU = Self.cpuSeconds(shore.serverPID) - cpuBefore
        let shoreWrites = await writer.stop()
        sampler.cancel()
        _ = await sampler.result
        for vessel in simulated { await vessel.client.shutdown() }
        try await Task.sleep(for: .seconds(2))
        let sorted = await recorder.latencies.sorted()
        func quantile(_ q: Double, _ sorted: [Double] = sorted) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        let steady = await recorder.steadyLatencies.sorted()
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Result(vessels: vessels, exchanges: sorted.count, perSecond: Double(sorted.count) / wall,
                      p50: quantile(0.5), p99: quantile(0.99), maximum: sorted.last ?? 0,
                      steadyP99: quantile(0.99, steady), steadyFailures: await recorder.steadyFailures, failures: await recorder.failures,
                      sent: await recorder.sent, received: await recorder.received, shoreWrites: shoreWrites,
                      peakMB: shore.serverMemory("VmHWM"), afterMB: shore.serverMemory("VmRSS"),
                      connections: await peaks.connections, serverConnections: await peaks.serverConnections, pool: bounds.databaseConnections,
                      serverCPU: serverCPU, databaseCPU: databaseCPU, generatorCPU: generatorCPU, machineCPU: machineCPU,
                      pollsWithEvents: await recorder.pollsWithEvents, pollsEmpty: await recorder.pollsEmpty, abandoned: await recorder.abandoned,
                      statements: statements ? await shore.statementReport() : [], join: join)
    }

    /// One vessel as the daemon runs with `long_poll` on: its writes (committing every
    /// `interval` ±20 %) go at once; more to fetch, at once; otherwise a long poll of `interval`
    /// seconds, abandoned when the next write commits; a busy answer, retried after 1–2 s.
    static func longPolling(_ vessel: SimulatedVessel, interval: Double, until end: ContinuousClock.Instant, recorder: Recorder) async {
        var nextWrite = ContinuousClock.now
        var more = true
        while ContinuousClock.now < end {
            let now = ContinuousClock.now
            let outcome: SimulatedVessel.Outcome
            if now >= nextWrite {
                outcome = await vessel.exchange()
                nextWrite = now + .seconds(interval * Double.random(in: 0.8...1.2))
            } else if more {
                outcome = await vessel.exchange(writing: false)
            } else {
                outcome = await vessel.exchange(poll: max(1, Int(interval)), abandonAt: nextWrite)
            }
            await recorder.record(outcome)
            switch outcome {
            case .ok(_, _, _, let m), .polled(_, _, let m): more = m
            case .abandoned: more = false
            case .failed:
                more = true
                try? await Task.sleep(for: .seconds(Double.random(in: 1...2)))
            }
        }
    }

    /// CPU seconds the whole machine has been busy (every core, every process), from /proc/stat.
    static func machineBusySeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = stat.split(separator: "\n").first else { return 0 }
        let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 5 else { return 0 }
        return (ticks.prefix(8).reduce(0, +) - ticks[3] - ticks[4]) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// User plus system CPU seconds of a process, from /proc/PID/stat (with `children`, also
    /// those of its children it has waited for).
    static func cpuSeconds(_ pid: pid_t, children: Bool = false) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let used = (11...(children ? 14 : 12)).reduce(0.0) { $0 + (Double(fields[$1]) ?? 0) }
        return used / Double(sysconf(Int32(_SC_CLK_TCK)))
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
