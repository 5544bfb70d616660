import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncShore
import FleetSyncTestSupport
import FleetSyncTransport
import Foundation
import PostgresNIO

/// The shore of one load run: a throwaway PostgreSQL 15 cluster with the example schema,
/// `fleetsync init` and `keygen` run by the binary under test, `vessels` enrolled with keys of
/// their own (the same `ShoreAuthority.enroll` as `fleetsync enroll`), each with `crew` seafarers
/// routed to it, and one `fleetsync serve` process.
struct ShoreUnderLoad {
    let cluster: TestCluster
    let url: String
    let database: String
    let port: Int
    let serverPID: pid_t
    let serverLog: String
    let identity: PublicIdentity
    let keys: [String: NodeKeys]
    let pool: Int

    struct Bounds {
        var databaseConnections: Int
        var concurrentExchanges: Int
        /// `[shore] exchange_queue_seconds` and `exchange_queue_length` (nil: the defaults).
        var queueSeconds: Double?
        var queueLength: Int?
    }

    /// `statements`: the cluster loads pg_stat_statements (with planning time), so that the run
    /// can say which statements take PostgreSQL's time.
    static func start(binary: String, vessels: [String], crew: Int, bounds: Bounds, statements: Bool = false) async throws -> ShoreUnderLoad {
        let cluster = try TestCluster.start()
        if statements {
            let admin = try await DatabaseSession.connect(url: cluster.url(database: "postgres"), logger: Fixtures.logger)
            try await admin.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            await admin.close()
            try cluster.pause()
            try cluster.resume()
            let loaded = try await DatabaseSession.connect(url: cluster.url(database: "postgres"), logger: Fixtures.logger)
            try await loaded.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
            _ = try await loaded.rows("SELECT pg_reload_conf()")
            await loaded.close()
        }
        let url = try await cluster.createDatabase(prefix: "fleet")
        if statements {
            let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
            try await db.execute("CREATE EXTENSION pg_stat_statements")
            await db.close()
        }
        let database = String(url.split(separator: "/").last!)
        try Fixtures.runScriptFile(Fixtures.exampleSchemaPath, url: url)
        let port = try FreePort.find()
        let keysDirectory = NSTemporaryDirectory() + "fleetsync-load-keys-\(UUID().uuidString)"
        let text = try FleetSyncBinary.exampleConfiguration(role: "shore", url: url, nodeID: "shore")
            .replacingOccurrences(of: "0.0.0.0:8080", with: "127.0.0.1:\(port)")
            .replacingOccurrences(of: "directory = \"/var/lib/fleetsync/keys\"", with: "directory = \"\(keysDirectory)\"")
            .replacingOccurrences(of: "[shore]\n", with: """
                [shore]
                database_connections = \(bounds.databaseConnections)
                concurrent_exchanges = \(bounds.concurrentExchanges)
                \(bounds.queueSeconds.map { "exchange_queue_seconds = \($0)" } ?? "")
                \(bounds.queueLength.map { "exchange_queue_length = \($0)" } ?? "")

                """)
        let configPath = try FleetSyncBinary.writeConfiguration(text)
        for command in ["init", "keygen"] {
            let result = try Shell.runCapturing([binary, command, "--config", configPath])
            guard result.status == 0 else { throw TestClusterError("fleetsync \(command) failed: \(result.error)") }
        }
        // Keys and enrollment of every vessel, then its partition: a vessel row and its crew.
        var keys: [String: NodeKeys] = [:]
        let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
        for vessel in vessels {
            let vesselKeys = try NodeKeys.generate()
            let identity = try vesselKeys.publicIdentity(node: vessel, role: "vessel")
            try await ShoreAuthority.enroll(vessel: vessel, identity: identity, text: identity.text, on: db)
            keys[vessel] = vesselKeys
        }
        var binds = PostgresBindings()
        binds.append(vessels)
        binds.append(Int32(crew))
        try await db.execute("INSERT INTO vessel (code, name) SELECT v, 'MV ' || v FROM unnest($1::text[]) v", binds, context: "seeding vessels")
        try await db.execute("""
            INSERT INTO seafarer (vessel_code, full_name, rank) SELECT v, v || ' crew ' || i, 'AB'
            FROM unnest($1::text[]) v, generate_series(1, $2) i
            """, binds, context: "seeding crew")
        await db.close()
        let log = NSTemporaryDirectory() + "fleetsync-load-serve-\(UUID().uuidString).log"
        var environment = ProcessInfo.processInfo.environment
        environment["FLEETSYNC_LOG_LEVEL"] = "error"
        let pid = try Shell.spawn([binary, "serve", "--config", configPath], environment: environment, stdout: log, stderr: log + ".err")
        let deadline = Date().addingTimeInterval(30)
        while !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on port") {
            guard Date() < deadline else { throw TestClusterError("fleetsync serve did not start: \((try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? "")") }
            usleep(50_000)
        }
        return ShoreUnderLoad(cluster: cluster, url: url, database: database, port: port, serverPID: pid, serverLog: log,
                              identity: try PublicIdentity.load(path: keysDirectory + "/identity.pub"), keys: keys, pool: bounds.databaseConnections)
    }

    /// A simulated vessel with its own HTTP client (its own connections, as a ship has).
    func vessel(_ id: String, writesPerExchange: Int) throws -> SimulatedVessel {
        let transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(port)", timeout: .seconds(60))
        return SimulatedVessel(client: SealedClient(vessel: id, keys: keys[id]!, shore: identity, transport: transport), writesPerExchange: writesPerExchange)
    }

    /// A line of the server's /proc status (VmHWM: peak resident memory; VmRSS: now), in MB.
    func serverMemory(_ field: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(serverPID)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kB = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kB / 1024
    }

    /// CPU seconds (user and system) PostgreSQL has used so far: the postmaster, its live
    /// children (backends, background workers) and the children it has reaped.
    func databaseCPU() -> Double {
        guard let text = try? String(contentsOfFile: cluster.directory + "/data/postmaster.pid", encoding: .utf8),
              let postmaster = Int32(text.split(separator: "\n").first ?? "") else { return 0 }
        var total = LoadRun.cpuSeconds(postmaster, children: true)
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, Int32(fields[1]) == postmaster { total += LoadRun.cpuSeconds(pid) }
        }
        return total
    }

    /// The statements that took PostgreSQL's time (execution and planning) since the last
    /// reset, most first, as lines to print; empty without pg_stat_statements.
    func statementReport(limit: Int = 15) async -> [String] {
        guard let db = try? await DatabaseSession.connect(url: url, logger: Fixtures.logger) else { return [] }
        defer { Task { await db.close() } }
        guard let rows = try? await db.rows("""
            SELECT calls, (total_exec_time + total_plan_time)::float8, total_plan_time::float8,
                   regexp_replace(left(query, 110), '\\s+', ' ', 'g'), sum(total_exec_time + total_plan_time) OVER ()::float8
            FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND query NOT LIKE '%pg_stat%' ORDER BY 2 DESC LIMIT \(limit)
            """) else { return [] }
        var lines: [String] = []
        for row in rows {
            guard let (calls, ms, plan, query, all) = try? row.decode((Int64, Double, Double, String, Double).self) else { continue }
            if lines.isEmpty { lines.append(String(format: "  statements: %.0f ms in all (execution and planning)", all)) }
            lines.append(String(format: "  %5.1f %%  %8.0f ms (plan %6.0f)  %7ld calls  %6.3f ms each  ", 100 * ms / max(all, 1), ms, plan, calls, ms / Double(max(calls, 1))) + query)
        }
        return lines
    }

    func resetStatements() async {
        guard let db = try? await DatabaseSession.connect(url: url, logger: Fixtures.logger) else { return }
        _ = try? await db.rows("SELECT pg_stat_statements_reset()")
        await db.close()
    }

    /// Stops the server (SIGTERM), then the cluster.
    func stop() {
        kill(serverPID, SIGTERM)
        _ = Shell.wait(serverPID)
        cluster.stop()
    }
}
