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
    }

    static func start(binary: String, vessels: [String], crew: Int, bounds: Bounds) async throws -> ShoreUnderLoad {
        let cluster = try TestCluster.start()
        let url = try await cluster.createDatabase(prefix: "fleet")
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

    /// Stops the server (SIGTERM), then the cluster.
    func stop() {
        kill(serverPID, SIGTERM)
        _ = Shell.wait(serverPID)
        cluster.stop()
    }
}
