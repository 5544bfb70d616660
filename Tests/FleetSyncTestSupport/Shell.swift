import Foundation

/// Runs programs for tests, as the `postgres` OS user when this process is root.
public enum Shell {
    static var asPostgresPrefix: [String] { getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : [] }

    /// Runs `arguments` as the postgres user and throws with its output when it fails.
    public static func runAsPostgres(_ arguments: [String]) throws {
        _ = try run(asPostgresPrefix + arguments)
    }

    /// Runs a program to completion and returns its standard output; throws on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String]? = nil, input: String? = nil) throws -> String {
        let result = try runCapturing(arguments, environment: environment)
        guard result.status == 0 else {
            throw TestClusterError("\(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output)\n\(result.error)")
        }
        return result.output
    }

    /// Runs a program to completion and returns its exit status, standard output and standard error.
    public static func runCapturing(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let outputData = out.fileHandleForReading.readDataToEndOfFile()
        let errorData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
    }

    /// Starts a program that outlives nobody's wait: output discarded, never waited for.
    static func spawnDetached(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }
}
