package bench

// Linux reports ru_maxrss in kilobytes.
func maxRSSBytes(v int64) int64 { return v * 1024 }
