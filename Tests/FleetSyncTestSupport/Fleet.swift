import FleetSyncCore
import FleetSyncPostgres
import Foundation

/// A running `fleetsync` process (serve or run), stopped with SIGTERM.
public final class FleetSyncProcess: @unchecked Sendable {
    public let pid: pid_t
    public let logPath: String
    private var exited: Int32?

    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        logPath = NSTemporaryDirectory() + "fleetsync-proc-\(UUID().uuidString).log"
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        pid = try Shell.spawn([FleetSyncBinary.path] + arguments, environment: env, stdout: logPath, stderr: logPath + ".err")
    }

    public var log: String {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "") + ((try? String(contentsOfFile: logPath + ".err", encoding: .utf8)) ?? "")
    }

    /// Waits until the log contains `text`.
    public func waitFor(_ text: String, seconds: Double = 30) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if log.contains(text) { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { throw TestClusterError("process exited before printing \"\(text)\":\n\(log)") }
            usleep(50_000)
        }
        throw TestClusterError("timed out waiting for \"\(text)\":\n\(log)")
    }

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    public func stop(signal number: Int32 = SIGTERM) -> Int32 {
        if let exited { return exited }
        kill(pid, number)
        let status = Shell.wait(pid)
        exited = status
        return status
    }

    deinit { if exited == nil { kill(pid, SIGKILL); _ = Shell.wait(pid) } }
}

/// One node of a test fleet: its own PostgreSQL 15 cluster, database and configuration file.
public struct FleetNode: Sendable {
    public var id: String
    public var url: String
    public var configPath: String
    public var configuration: FleetSyncConfiguration
    /// The node's own PostgreSQL cluster (tests stop and start it).
    public var cluster: TestCluster? = nil
}

/// A shore and vessels, each on its own cluster, initialized with `fleetsync init` and enrolled.
public struct Fleet: Sendable {
    public var shore: FleetNode
    public var vessels: [FleetNode]
    public var httpPort: Int

    /// - Parameter shoreID: the shore's node id (any valid id: vessels learn it from responses).
    /// - Parameters:
    ///   - schema: SQL creating the business tables on every node, instead of examples/schema.sql.
    ///   - tables: the `[[table]]` sections of the configuration, instead of the example's.
    public static func make(vessels ids: [String], shoreID: String = "shore", limits: String = "", retentionDays: Int = 30,
                            schema: String? = nil, tables: String? = nil) async throws -> Fleet {
        let port = try FreePort.find()
        // Every node has its own keys (fleetsync keygen); vessels pin the shore's identity file
        // and are enrolled with theirs: every exchange in the tests is authenticated and sealed.
        var shoreIdentity = ""
        func node(_ role: String, _ id: String) async throws -> FleetNode {
            let keys = NSTemporaryDirectory() + "fleetsync-keys-\(id)-\(UUID().uuidString)"
            let cluster = try TestCluster.start()
            let url = try await cluster.createDatabase(prefix: id)
            if let schema {
                let path = NSTemporaryDirectory() + "fleetsync-schema-\(UUID().uuidString).sql"
                try schema.write(toFile: path, atomically: true, encoding: .utf8)
                try Fixtures.runScriptFile(path, url: url)
            } else {
                try Fixtures.runScriptFile(Fixtures.exampleSchemaPath, url: url)
            }
            var text = try FleetSyncBinary.exampleConfiguration(role: role, url: url, nodeID: id)
            text = text.replacingOccurrences(of: "0.0.0.0:8080", with: "127.0.0.1:\(port)")
                .replacingOccurrences(of: "http://127.0.0.1:8080", with: "http://127.0.0.1:\(port)")
                .replacingOccurrences(of: "retention_days = 30", with: "retention_days = \(retentionDays)")
                .replacingOccurrences(of: "directory = \"/var/lib/fleetsync/keys\"", with: "directory = \"\(keys)\"")
            if role == "vessel" {
                text = text.replacingOccurrences(of: "/etc/fleetsync/shore-identity.pub", with: shoreIdentity)
            }
            if !limits.isEmpty {
                text = text.replacingOccurrences(of: #"(?s)\[limits\].*?\n\n"#, with: limits + "\n\n", options: .regularExpression)
            }
            if let tables, let first = text.range(of: #"(?m)^\[\[table\]\]"#, options: .regularExpression) {
                text = String(text[..<first.lowerBound]) + tables
            }
            let path = try FleetSyncBinary.writeConfiguration(text)
            let result = try FleetSyncBinary.run(["init", "--config", path])
            guard result.status == 0 else { throw TestClusterError("init \(id) failed: \(result.error)") }
            let keygen = try FleetSyncBinary.run(["keygen", "--config", path])
            guard keygen.status == 0 else { throw TestClusterError("keygen \(id) failed: \(keygen.error)") }
            return FleetNode(id: id, url: url, configPath: path, configuration: try ConfigurationLoader.load(text: text), cluster: cluster)
        }
        let shore = try await node("shore", shoreID)
        shoreIdentity = try shore.configuration.keysDirectory.map { $0 + "/identity.pub" } ?? { throw TestClusterError("the shore has no [keys] directory") }()
        var vessels: [FleetNode] = []
        for id in ids {
            vessels.append(try await node("vessel", id))
            let identity = vessels.last!.configuration.keysDirectory! + "/identity.pub"
            let enrolled = try FleetSyncBinary.run(["enroll", "--config", shore.configPath, "--vessel", id, "--identity", identity])
            guard enrolled.status == 0 else { throw TestClusterError("enroll \(id) failed: \(enrolled.error)") }
        }
        return Fleet(shore: shore, vessels: vessels, httpPort: port)
    }

    /// Starts `fleetsync serve` for the shore (optionally on another port of the same database).
    public func serve(port: Int? = nil) throws -> FleetSyncProcess {
        var path = shore.configPath
        if let port {
            let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "127.0.0.1:\(httpPort)", with: "127.0.0.1:\(port)")
            path = try FleetSyncBinary.writeConfiguration(text)
        }
        let process = try FleetSyncProcess(["serve", "--config", path], environment: ["FLEETSYNC_LOG_LEVEL": "warning"])
        try process.waitFor("listening on port")
        return process
    }

    /// Runs `fleetsync sync --once` on a vessel.
    public func sync(_ vessel: FleetNode) throws -> (status: Int32, output: String, error: String) {
        try FleetSyncBinary.run(["sync", "--once", "--config", vessel.configPath])
    }
}
